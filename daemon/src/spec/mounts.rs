//! The container's mounts: containerd's defaults (/proc, /dev, /dev/pts,
//! /dev/shm, /dev/mqueue, /sys read-only, /sys/fs/cgroup read-only), the pod's
//! /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm, and the CRI mounts,
//! with the rootfs propagation the CRI mounts need.
//!
//! Mirrors containerd's CRI plugin 1.6/1.7: `containerMounts` (the pod files,
//! read-only when the rootfs is; /dev/shm of the node for host IPC),
//! `customopts.WithMounts` (a CRI mount replaces a pod file at the same
//! destination; CRI + pod mounts stable-sorted by path depth so parents come
//! first; defaults dropped when a supplied mount has the same destination, and
//! everything under /dev when /dev itself is supplied; options `rbind`,
//! `rprivate`/`rslave`/`rshared`, `ro`/`rw`; `rslave` needs a shared or slave host
//! mount and makes the rootfs `rslave` unless it is `rshared`; `rshared` needs a
//! shared host mount and makes the rootfs `rshared`), `oci.populateDefaultUnixSpec`
//! minus `/run` (`WithoutRunMount`) and `WithWriteableSysfs`/`WithWriteableCgroupfs`
//! for privileged containers. SELinux relabelling is not done (no SELinux here).

use super::{validate, HostView, SandboxFacts, SpecError};
use crid_proto::cri::{ContainerConfig, LinuxContainerSecurityContext, Mount as CriMount};
use crid_proto::cri::{MountPropagation, NamespaceMode};
use oci_spec::runtime::Mount;
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Propagation of a host mount (from /proc/self/mountinfo's optional fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Neither shared nor slave.
    Private,
    /// `master:N`: receives events from its master.
    Slave,
    /// `shared:N`.
    Shared,
}

/// Rootfs propagation the CRI mounts require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsPropagation {
    /// `rslave`: for HostToContainer mounts.
    Slave,
    /// `rshared`: for Bidirectional mounts.
    Shared,
}

impl fmt::Display for RootfsPropagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootfsPropagation::Slave => "rslave",
            RootfsPropagation::Shared => "rshared",
        })
    }
}

/// The mounts plus what they require of the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// In order: surviving defaults, then CRI and pod mounts by depth.
    pub mounts: Vec<Mount>,
    /// `None`: runc's default (rprivate).
    pub rootfs_propagation: Option<RootfsPropagation>,
}

/// Destination of the pod's /etc/hostname.
pub const ETC_HOSTNAME: &str = "/etc/hostname";
/// Destination of the pod's /etc/hosts.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// Destination of the pod's /etc/resolv.conf.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Destination of the pod's /dev/shm.
pub const DEV_SHM: &str = "/dev/shm";

/// containerd's default mounts (`populateDefaultUnixSpec` without /run) plus the
/// read-only cgroup mount `WithMounts` appends.
pub fn default_mounts() -> Vec<Mount> {
    let m = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(dest));
        m.set_typ(Some(typ.to_string()));
        m.set_source(Some(PathBuf::from(src)));
        m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
        m
    };
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        m(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// The pod's files and /dev/shm as CRI mounts (containerd's `containerMounts`),
/// each unless a CRI mount already targets it. A fact the sandbox lacks is skipped.
pub fn pod_mounts(
    config: &ContainerConfig,
    sc: &LinuxContainerSecurityContext,
    sandbox: &SandboxFacts,
) -> Vec<CriMount> {
    let mut out = Vec::new();
    let ro = sc.readonly_rootfs;
    let mut add = |dest: &str, src: Option<PathBuf>, readonly: bool| {
        if let Some(src) = src {
            if !in_cri_mounts(dest, &config.mounts) {
                out.push(CriMount {
                    container_path: dest.to_string(),
                    host_path: src.display().to_string(),
                    readonly,
                    ..Default::default()
                });
            }
        }
    };
    add(ETC_HOSTNAME, sandbox.hostname_path.clone(), ro);
    add(ETC_HOSTS, sandbox.etc_hosts_path.clone(), ro);
    add(RESOLV_CONF, sandbox.resolv_conf_path.clone(), ro);
    let host_ipc = sandbox.host_ipc
        || sc
            .namespace_options
            .as_ref()
            .is_some_and(|n| n.ipc == NamespaceMode::Node as i32);
    let shm = if host_ipc {
        Some(PathBuf::from(DEV_SHM))
    } else {
        sandbox.shm_path.clone()
    };
    add(DEV_SHM, shm, false);
    out
}

fn in_cri_mounts(dest: &str, mounts: &[CriMount]) -> bool {
    let d = clean(dest);
    mounts.iter().any(|m| clean(&m.container_path) == d)
}

/// Lexically cleaned absolute path (`filepath.Clean` for paths without `..`).
fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Number of separators in the cleaned path (containerd's `orderedMounts.parts`).
fn depth(p: &str) -> usize {
    let c = clean(p);
    if c == Path::new("/") {
        1
    } else {
        c.components().count() - 1
    }
}

/// Builds every mount of the container.
pub fn plan(
    config: &ContainerConfig,
    sc: &LinuxContainerSecurityContext,
    sandbox: &SandboxFacts,
    privileged: bool,
    rro_supported: bool,
    host: &dyn HostView,
) -> Result<MountPlan, SpecError> {
    for m in &config.mounts {
        check_cri_mount(m, rro_supported)?;
    }
    // CRI mounts first, then pod mounts they do not override; stable-sorted by depth.
    let mut supplied: Vec<(CriMount, bool)> =
        config.mounts.iter().cloned().map(|m| (m, true)).collect();
    supplied.extend(
        pod_mounts(config, sc, sandbox)
            .into_iter()
            .map(|m| (m, false)),
    );
    supplied.sort_by_key(|(m, _)| depth(&m.container_path));

    let dests: HashSet<PathBuf> = supplied
        .iter()
        .map(|(m, _)| clean(&m.container_path))
        .collect();
    let dev_supplied = dests.contains(Path::new("/dev"));
    let mut mounts: Vec<Mount> = default_mounts()
        .into_iter()
        .filter(|m| {
            let d = m.destination();
            // Replaced by a supplied mount, or under a supplied /dev.
            let under_dev = dev_supplied && d.starts_with("/dev") && d != Path::new("/dev");
            !(dests.contains(d) || under_dev)
        })
        .collect();
    if privileged {
        for m in &mut mounts {
            if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
                if let Some(opts) = m.options_mut() {
                    for o in opts.iter_mut().filter(|o| *o == "ro") {
                        *o = "rw".into();
                    }
                }
            }
        }
    }

    let mut rootfs_propagation = None;
    for (m, from_cri) in &supplied {
        // Our own pod files are private binds; only CRI mounts ask for propagation.
        let source = if *from_cri {
            host.real_path(Path::new(&m.host_path))
                .map_err(|e| SpecError::io(format!("resolving mount source {}", m.host_path), e))?
        } else {
            PathBuf::from(&m.host_path)
        };
        let mut opts = vec!["rbind".to_string()];
        match MountPropagation::try_from(m.propagation).unwrap_or_default() {
            MountPropagation::PropagationPrivate => opts.push("rprivate".into()),
            MountPropagation::PropagationBidirectional => {
                require(host, &source, &[Propagation::Shared], "shared")?;
                opts.push("rshared".into());
                rootfs_propagation = Some(RootfsPropagation::Shared);
            }
            MountPropagation::PropagationHostToContainer => {
                require(
                    host,
                    &source,
                    &[Propagation::Shared, Propagation::Slave],
                    "shared or slave",
                )?;
                opts.push("rslave".into());
                if rootfs_propagation.is_none() {
                    rootfs_propagation = Some(RootfsPropagation::Slave);
                }
            }
        }
        // Like containerd, a read-only rootfs does not make the mounts read-only.
        opts.push(if m.readonly { "ro" } else { "rw" }.into());
        if m.recursive_read_only {
            // runc applies MOUNT_ATTR_RDONLY with AT_RECURSIVE (mount_setattr),
            // so submounts of the source are read-only too.
            opts.push("rro".into());
        }
        let mut out = Mount::default();
        out.set_destination(PathBuf::from(&m.container_path));
        out.set_typ(Some("bind".into()));
        out.set_source(Some(source));
        out.set_options(Some(opts));
        mounts.push(out);
    }
    Ok(MountPlan {
        mounts,
        rootfs_propagation,
    })
}

/// Rejects a CRI mount crid cannot honour.
fn check_cri_mount(m: &CriMount, rro_supported: bool) -> Result<(), SpecError> {
    validate::container_path(&m.container_path)?;
    if m.image.is_some() {
        return Err(SpecError::Unsupported("image volume mounts (Mount.image)"));
    }
    validate::host_path(&m.host_path)?;
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::Unsupported("idmapped mounts"));
    }
    let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
        SpecError::InvalidArgument(format!(
            "mount {}: unknown propagation {}",
            m.container_path, m.propagation
        ))
    })?;
    if m.recursive_read_only {
        // The CRI contract: recursive read-only needs readonly and private
        // propagation (a slave/shared submount could appear later, writable).
        if !m.readonly {
            return Err(SpecError::InvalidArgument(format!(
                "mount {}: recursive_read_only needs readonly",
                m.container_path
            )));
        }
        if propagation != MountPropagation::PropagationPrivate {
            return Err(SpecError::InvalidArgument(format!(
                "mount {}: recursive_read_only needs private propagation, not {}",
                m.container_path,
                propagation.as_str_name()
            )));
        }
        if !rro_supported {
            // Status does not advertise the feature for this handler; refuse
            // rather than mount half read-only.
            return Err(SpecError::InvalidArgument(format!(
                "mount {}: recursive read-only mounts are not supported by the pod's runtime handler",
                m.container_path
            )));
        }
    }
    Ok(())
}

fn require(
    host: &dyn HostView,
    source: &Path,
    accepted: &[Propagation],
    what: &str,
) -> Result<(), SpecError> {
    let p = host.mount_propagation(source).map_err(|e| {
        SpecError::io(
            format!("looking up the mount holding {}", source.display()),
            e,
        )
    })?;
    if accepted.contains(&p) {
        Ok(())
    } else {
        Err(SpecError::FailedPrecondition(format!(
            "path {} is not on a {what} mount",
            source.display()
        )))
    }
}

/// Propagation of the mount holding `path` (absolute, symlinks resolved), from
/// the text of /proc/self/mountinfo: the deepest mount point containing it, the
/// last one listed when several are stacked.
pub fn propagation_from_mountinfo(mountinfo: &str, path: &Path) -> Option<Propagation> {
    let mut best: Option<(usize, Propagation)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 7 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(fields[4]));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let optional = fields[6..].iter().take_while(|f| **f != "-");
        let mut prop = Propagation::Private;
        for f in optional {
            if f.starts_with("shared:") {
                prop = Propagation::Shared;
                break;
            }
            if f.starts_with("master:") {
                prop = Propagation::Slave;
            }
        }
        let len = mount_point.components().count();
        if best.is_none_or(|(l, _)| len >= l) {
            best = Some((len, prop));
        }
    }
    best.map(|(_, p)| p)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::FakeHost;

    fn cri(dest: &str, src: &str) -> CriMount {
        CriMount {
            container_path: dest.into(),
            host_path: src.into(),
            ..Default::default()
        }
    }

    fn pod() -> SandboxFacts {
        SandboxFacts {
            etc_hosts_path: Some("/run/crid/pods/p1/hosts".into()),
            resolv_conf_path: Some("/run/crid/pods/p1/resolv.conf".into()),
            hostname_path: Some("/run/crid/pods/p1/hostname".into()),
            shm_path: Some("/run/crid/pods/p1/shm".into()),
            ..Default::default()
        }
    }

    fn dests(p: &MountPlan) -> Vec<String> {
        p.mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn find<'a>(p: &'a MountPlan, dest: &str) -> &'a Mount {
        p.mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap()
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    /// A bare container config in a pod with these facts.
    fn plan_with_facts(facts: &SandboxFacts, privileged: bool) -> MountPlan {
        plan(
            &ContainerConfig::default(),
            &Default::default(),
            facts,
            privileged,
            false,
            &FakeHost::default(),
        )
        .unwrap()
    }

    /// The plan for a container with just `mounts`, in the default pod.
    fn plan_mounts(mounts: Vec<CriMount>, rro_supported: bool) -> Result<MountPlan, SpecError> {
        let config = ContainerConfig {
            mounts,
            ..Default::default()
        };
        plan(
            &config,
            &Default::default(),
            &pod(),
            false,
            rro_supported,
            &FakeHost::default(),
        )
    }

    fn plan_for(config: &ContainerConfig, sc: &LinuxContainerSecurityContext) -> MountPlan {
        plan(config, sc, &pod(), false, false, &FakeHost::default()).unwrap()
    }

    #[test]
    fn defaults_then_pod_files() {
        let p = plan_for(&ContainerConfig::default(), &Default::default());
        assert_eq!(
            dests(&p),
            vec![
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm",
            ]
        );
        assert!(opts(find(&p, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&p, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        let shm = find(&p, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/crid/pods/p1/shm"))
        );
        assert_eq!(opts(shm), vec!["rbind", "rprivate", "rw"]);
        assert_eq!(
            opts(find(&p, "/etc/hosts")),
            vec!["rbind", "rprivate", "rw"]
        );
        assert_eq!(p.rootfs_propagation, None);
    }

    #[test]
    fn readonly_rootfs_makes_pod_files_readonly_but_not_shm() {
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        };
        let p = plan_for(&ContainerConfig::default(), &sc);
        for f in [ETC_HOSTS, ETC_HOSTNAME, RESOLV_CONF] {
            assert_eq!(
                opts(find(&p, f)).last().map(String::as_str),
                Some("ro"),
                "{f}"
            );
        }
        assert_eq!(
            opts(find(&p, DEV_SHM)).last().map(String::as_str),
            Some("rw")
        );
    }

    #[test]
    fn cri_mount_over_etc_hosts_replaces_the_pods() {
        let config = ContainerConfig {
            mounts: vec![cri("/etc/hosts/", "/srv/my-hosts")],
            ..Default::default()
        };
        let p = plan_for(&config, &Default::default());
        let hosts: Vec<&Mount> = p
            .mounts
            .iter()
            .filter(|m| clean(&m.destination().display().to_string()) == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(Path::new("/srv/my-hosts"))
        );
    }

    #[test]
    fn supplied_mounts_sorted_by_depth_stably_and_replace_defaults() {
        let config = ContainerConfig {
            mounts: vec![
                cri("/data/a/b", "/h/ab"),
                cri("/data", "/h/data"),
                cri("/proc", "/h/proc"),
                cri("/z", "/h/z"),
            ],
            ..Default::default()
        };
        let p = plan_for(&config, &Default::default());
        assert_eq!(
            dests(&p),
            vec![
                // Defaults minus /proc (supplied).
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                // Depth 1, CRI order kept: /data, /proc, /z.
                "/data",
                "/proc",
                "/z",
                // Depth 2: pod files, then /dev/shm.
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm",
                // Depth 3.
                "/data/a/b",
            ]
        );
    }

    #[test]
    fn supplied_dev_drops_every_default_under_dev() {
        let config = ContainerConfig {
            mounts: vec![cri("/dev", "/h/dev")],
            ..Default::default()
        };
        let p = plan_for(&config, &Default::default());
        let d = dests(&p);
        assert!(!d.contains(&"/dev/pts".to_string()));
        assert!(!d.contains(&"/dev/mqueue".to_string()));
        assert_eq!(d.iter().filter(|x| *x == "/dev").count(), 1);
        // The pod's /dev/shm is a supplied mount, it stays (after /dev).
        let pos = |x: &str| d.iter().position(|y| y == x).unwrap();
        assert!(pos("/dev") < pos("/dev/shm"));
    }

    #[test]
    fn readonly_and_propagation_flags() {
        let mut ro = cri("/ro", "/h/ro");
        ro.readonly = true;
        ro.selinux_relabel = true; // ignored
        let mut slave = cri("/slave", "/mnt/slave/x");
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let config = ContainerConfig {
            mounts: vec![ro, slave],
            ..Default::default()
        };
        let host = FakeHost::default()
            .with_propagation("/mnt/slave", Propagation::Slave)
            .with_propagation("/mnt/shared", Propagation::Shared);
        let p = plan(&config, &Default::default(), &pod(), false, false, &host).unwrap();
        assert_eq!(opts(find(&p, "/ro")), vec!["rbind", "rprivate", "ro"]);
        assert_eq!(opts(find(&p, "/slave")), vec!["rbind", "rslave", "rw"]);
        assert_eq!(p.rootfs_propagation, Some(RootfsPropagation::Slave));

        // Bidirectional wins the rootfs propagation whatever the order.
        let mut shared = cri("/shared", "/mnt/shared/y");
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        let mut slave = cri("/slave2", "/mnt/shared/z");
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let config = ContainerConfig {
            mounts: vec![shared, slave],
            ..Default::default()
        };
        let p = plan(&config, &Default::default(), &pod(), false, false, &host).unwrap();
        assert_eq!(opts(find(&p, "/shared")), vec!["rbind", "rshared", "rw"]);
        assert_eq!(p.rootfs_propagation, Some(RootfsPropagation::Shared));
        assert_eq!(RootfsPropagation::Shared.to_string(), "rshared");
    }

    #[test]
    fn propagation_requires_a_suitable_host_mount() {
        let host = FakeHost::default()
            .with_propagation("/mnt/private", Propagation::Private)
            .with_propagation("/mnt/slave", Propagation::Slave);
        let mut m = cri("/x", "/mnt/slave/x");
        m.propagation = MountPropagation::PropagationBidirectional as i32;
        let config = ContainerConfig {
            mounts: vec![m.clone()],
            ..Default::default()
        };
        let err = plan(&config, &Default::default(), &pod(), false, false, &host).unwrap_err();
        assert!(matches!(err, SpecError::FailedPrecondition(e) if e.contains("shared")));
        m.host_path = "/mnt/private/x".into();
        m.propagation = MountPropagation::PropagationHostToContainer as i32;
        let config = ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        assert!(matches!(
            plan(&config, &Default::default(), &pod(), false, false, &host),
            Err(SpecError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn mount_source_symlinks_are_resolved() {
        let host = FakeHost::default().with_real_path("/var/link", "/srv/real");
        let config = ContainerConfig {
            mounts: vec![cri("/d", "/var/link")],
            ..Default::default()
        };
        let p = plan(&config, &Default::default(), &pod(), false, false, &host).unwrap();
        assert_eq!(
            find(&p, "/d").source().as_deref(),
            Some(Path::new("/srv/real"))
        );
    }

    #[test]
    fn bad_cri_mounts_are_rejected() {
        let mut idmapped = cri("/x", "/y");
        idmapped.uid_mappings = vec![Default::default()];
        let mut rro = cri("/x", "/y");
        rro.readonly = true;
        rro.recursive_read_only = true;
        let mut image = cri("/x", "");
        image.image = Some(Default::default());
        let mut badprop = cri("/x", "/y");
        badprop.propagation = 7;
        for (m, unsupported) in [
            (cri("x", "/y"), false),
            (cri("/x/../etc", "/y"), false),
            (cri("/x", "relative"), false),
            (cri("/x", "/a/../etc"), false),
            (cri("", "/y"), false),
            (badprop, false),
            (idmapped, true),
            (rro, false),
            (image, true),
        ] {
            let err = plan_mounts(vec![m.clone()], false).unwrap_err();
            if unsupported {
                assert!(matches!(err, SpecError::Unsupported(_)), "{m:?}: {err}");
            } else {
                assert!(matches!(err, SpecError::InvalidArgument(_)), "{m:?}: {err}");
            }
        }
    }

    #[test]
    fn recursive_read_only_adds_rro_when_the_handler_supports_it() {
        let mut m = cri("/data", "/srv/data");
        m.readonly = true;
        m.recursive_read_only = true;
        let p = plan_mounts(vec![m.clone()], true).unwrap();
        assert_eq!(
            opts(find(&p, "/data")),
            vec!["rbind", "rprivate", "ro", "rro"]
        );
        // Not read-only, or not private, or not supported: refused, naming the mount.
        let mut rw = m.clone();
        rw.readonly = false;
        let mut slave = m.clone();
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let mut shared = m.clone();
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        for (bad, supported) in [(rw, true), (slave, true), (shared, true), (m, false)] {
            let err = plan_mounts(vec![bad], supported).unwrap_err();
            assert!(
                matches!(&err, SpecError::InvalidArgument(msg) if msg.contains("/data")),
                "{err}"
            );
        }
    }

    #[test]
    fn host_ipc_binds_the_nodes_dev_shm() {
        let mut facts = pod();
        facts.host_ipc = true;
        facts.shm_path = None;
        let p = plan_with_facts(&facts, false);
        assert_eq!(
            find(&p, DEV_SHM).source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn missing_pod_facts_are_skipped() {
        let facts = SandboxFacts {
            etc_hosts_path: Some("/h".into()),
            ..Default::default()
        };
        let p = plan_with_facts(&facts, false);
        let d = dests(&p);
        assert!(d.contains(&"/etc/hosts".to_string()));
        assert!(!d.contains(&"/etc/resolv.conf".to_string()));
        // Without a pod shm, the default tmpfs /dev/shm stays.
        assert_eq!(find(&p, DEV_SHM).typ().as_deref(), Some("tmpfs"));
    }

    #[test]
    fn privileged_gets_writable_sys_and_cgroup() {
        let p = plan_with_facts(&pod(), true);
        assert!(opts(find(&p, "/sys")).contains(&"rw".to_string()));
        assert!(!opts(find(&p, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&p, "/sys/fs/cgroup")).contains(&"rw".to_string()));
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt rw shared:5 - tmpfs tmpfs rw
31 30 0:26 / /mnt/slave rw master:7 - tmpfs tmpfs rw
32 30 0:27 / /mnt/private rw - tmpfs tmpfs rw
33 30 0:28 / /mnt/with\\040space rw shared:9 master:2 - tmpfs tmpfs rw
34 32 0:29 / /mnt/private rw master:3 - tmpfs tmpfs rw
";
        let p = |x: &str| propagation_from_mountinfo(info, Path::new(x));
        assert_eq!(p("/etc/x"), Some(Propagation::Shared));
        assert_eq!(p("/mnt/slave/a/b"), Some(Propagation::Slave));
        assert_eq!(p("/mnt/slavery"), Some(Propagation::Shared));
        // Stacked on the same mount point: the last one is on top.
        assert_eq!(p("/mnt/private/q"), Some(Propagation::Slave));
        assert_eq!(p("/mnt/with space/f"), Some(Propagation::Shared));
        assert_eq!(propagation_from_mountinfo("", Path::new("/x")), None);
    }
}
