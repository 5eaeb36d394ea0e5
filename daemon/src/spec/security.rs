//! Capabilities, masked and read-only paths: containerd's CRI defaults.
//!
//! Mirrors containerd 1.6/1.7:
//! - default capabilities: `oci.defaultUnixCaps()` (14 caps) in the bounding,
//!   permitted and effective sets; no inheritable set (dropped by the
//!   CVE-2022-24769 fix in 1.6.1) and no ambient set (`WithoutAmbientCaps`);
//! - `add_ambient_capabilities` (containerd 2.x `WithAmbientCapabilities`): the
//!   named caps become the inheritable and ambient sets. The kernel keeps an
//!   ambient cap only while it is permitted and inheritable, so one outside the
//!   container's (effective = permitted) set is refused here rather than
//!   failing later inside runc;
//! - `customopts.WithCapabilities`: "ALL" in add grants every capability, "ALL" in
//!   drop clears them, then the named adds, then the named drops; CRI names
//!   come without the `CAP_` prefix (we accept it too);
//! - privileged (`oci.WithPrivileged`): every capability crid itself holds
//!   (`WithAllCurrentCapabilities`), no masked or read-only paths;
//! - masked/read-only paths: containerd's CRI plugin clears the OCI defaults and
//!   uses exactly what the kubelet sends (the kubelet sends its default lists for
//!   `procMount: Default`, none for `Unmasked`) — containerd issue 5029;
//! - rlimits: none (`WithoutDefaultSecuritySettings` removes the default
//!   RLIMIT_NOFILE, so containers inherit the shim's); no_new_privs only when
//!   asked (`WithNewPrivileges`, then `WithNoNewPrivileges` on request).
//!
//! Seccomp and AppArmor profiles: [`super::seccomp`] and [`super::apparmor`].

use super::SpecError;
use crid_proto::cri::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use std::str::FromStr;

/// Every capability by number (the kernel's ABI), up to CAP_CHECKPOINT_RESTORE (40).
pub const ALL_CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's `defaultUnixCaps()` (oci/spec.go), in its order.
pub const DEFAULT_CAPABILITY_NAMES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Parses a CRI capability name (`NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN`).
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map_err(|_| SpecError::InvalidArgument(format!("unknown capability {name:?}")))
}

/// The capabilities in a `CapEff`-style mask (bit n = capability n).
pub fn capabilities_from_mask(mask: u64) -> Vec<Capability> {
    ALL_CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .filter_map(|(_, name)| Capability::from_str(name).ok())
        .collect()
}

/// Every capability the kernel ABI knows (what [`super::HostFacts`] defaults to).
pub fn all_capabilities() -> Vec<Capability> {
    capabilities_from_mask(u64::MAX)
}

/// containerd's default set.
pub fn default_capabilities() -> Capabilities {
    DEFAULT_CAPABILITY_NAMES
        .iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

/// The process capabilities for this security context; `all` is every
/// capability crid holds (privileged and "ALL").
pub fn capabilities(
    sc: &LinuxContainerSecurityContext,
    all: &[Capability],
) -> Result<LinuxCapabilities, SpecError> {
    let set: Capabilities = if sc.privileged {
        all.iter().copied().collect()
    } else {
        let mut set = default_capabilities();
        if let Some(c) = &sc.capabilities {
            let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
            if c.add_capabilities.iter().any(is_all) {
                set = all.iter().copied().collect();
            }
            if c.drop_capabilities.iter().any(is_all) {
                set.clear();
            }
            for name in c.add_capabilities.iter().filter(|s| !is_all(s)) {
                set.insert(parse_capability(name)?);
            }
            for name in c.drop_capabilities.iter().filter(|s| !is_all(s)) {
                set.remove(&parse_capability(name)?);
            }
        }
        set
    };
    let ambient = ambient_capabilities(sc, &set)?;
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(ambient.clone());
    caps.set_ambient(ambient);
    Ok(caps)
}

/// The ambient (and so inheritable) set asked for, each checked against the
/// container's permitted set; `None` when none is asked for.
fn ambient_capabilities(
    sc: &LinuxContainerSecurityContext,
    permitted: &Capabilities,
) -> Result<Option<Capabilities>, SpecError> {
    let names = sc
        .capabilities
        .as_ref()
        .map(|c| c.add_ambient_capabilities.as_slice())
        .unwrap_or_default();
    if names.is_empty() {
        return Ok(None);
    }
    let mut set = Capabilities::new();
    for name in names {
        let cap = parse_capability(name)?;
        if !permitted.contains(&cap) {
            return Err(SpecError::InvalidArgument(format!(
                "ambient capability {name:?} is not in the container's capability set \
                 (add it to add_capabilities)"
            )));
        }
        set.insert(cap);
    }
    Ok(Some(set))
}

/// (masked paths, read-only paths): the kubelet's lists, none when privileged.
pub fn masked_and_readonly_paths(sc: &LinuxContainerSecurityContext) -> (Vec<String>, Vec<String>) {
    if sc.privileged {
        return (Vec::new(), Vec::new());
    }
    (sc.masked_paths.clone(), sc.readonly_paths.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::cri::Capability as CriCaps;

    fn sc(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    fn names(c: &LinuxCapabilities) -> Vec<String> {
        let mut v: Vec<String> = c
            .effective()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_string())
            .collect();
        v.sort();
        v
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn every_name_parses() {
        assert_eq!(all_capabilities().len(), 41);
        assert_eq!(default_capabilities().len(), 14);
        assert_eq!(parse_capability("net_admin").unwrap(), Capability::NetAdmin);
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN").unwrap(),
            Capability::SysAdmin
        );
        assert!(matches!(
            parse_capability("NOT_A_CAP"),
            Err(SpecError::InvalidArgument(_))
        ));
        assert_eq!(
            capabilities_from_mask(0b101),
            vec![Capability::Chown, Capability::DacReadSearch]
        );
    }

    #[test]
    fn defaults_are_containerds() {
        let c = capabilities(&Default::default(), &all_capabilities()).unwrap();
        assert_eq!(names(&c), sorted(&DEFAULT_CAPABILITY_NAMES));
        assert_eq!(c.bounding(), c.effective());
        assert_eq!(c.permitted(), c.effective());
        assert_eq!(c.inheritable(), &None);
        assert_eq!(c.ambient(), &None);
    }

    #[test]
    fn add_and_drop() {
        let c = capabilities(
            &sc(&["NET_ADMIN", "sys_time"], &["MKNOD", "KILL"]),
            &all_capabilities(),
        )
        .unwrap();
        let mut want: Vec<&str> = DEFAULT_CAPABILITY_NAMES
            .iter()
            .copied()
            .filter(|n| *n != "MKNOD" && *n != "KILL")
            .collect();
        want.extend(["NET_ADMIN", "SYS_TIME"]);
        assert_eq!(names(&c), sorted(&want));
    }

    #[test]
    fn all_handling() {
        let all = all_capabilities();
        // add ALL, drop one: everything but it.
        let c = capabilities(&sc(&["ALL"], &["CHOWN"]), &all).unwrap();
        assert_eq!(names(&c).len(), 40);
        assert!(!names(&c).contains(&"CHOWN".to_string()));
        // drop ALL, add one: only it.
        let c = capabilities(&sc(&["NET_BIND_SERVICE"], &["all"]), &all).unwrap();
        assert_eq!(names(&c), vec!["NET_BIND_SERVICE".to_string()]);
        // drop ALL alone: nothing.
        let c = capabilities(&sc(&[], &["ALL"]), &all).unwrap();
        assert!(names(&c).is_empty());
        // ALL means what crid holds, not more.
        let held = capabilities_from_mask(0b11);
        let c = capabilities(&sc(&["ALL"], &[]), &held).unwrap();
        assert_eq!(names(&c), sorted(&["CHOWN", "DAC_OVERRIDE"]));
    }

    #[test]
    fn ambient_capabilities_become_inheritable_and_ambient() {
        let mut s = sc(&["NET_ADMIN"], &[]);
        if let Some(c) = s.capabilities.as_mut() {
            c.add_ambient_capabilities = vec!["net_admin".into(), "CAP_CHOWN".into()];
        }
        let c = capabilities(&s, &all_capabilities()).unwrap();
        let want: Capabilities = [Capability::NetAdmin, Capability::Chown]
            .into_iter()
            .collect();
        assert_eq!(c.ambient(), &Some(want.clone()));
        assert_eq!(c.inheritable(), &Some(want));
        assert!(c
            .effective()
            .clone()
            .unwrap()
            .contains(&Capability::NetAdmin));
    }

    #[test]
    fn ambient_capability_outside_the_set_or_unknown_is_refused() {
        let mut s = sc(&[], &[]);
        if let Some(c) = s.capabilities.as_mut() {
            c.add_ambient_capabilities = vec!["SYS_ADMIN".into()];
        }
        let err = capabilities(&s, &all_capabilities()).unwrap_err();
        assert!(matches!(&err, SpecError::InvalidArgument(m) if m.contains("SYS_ADMIN")));
        if let Some(c) = s.capabilities.as_mut() {
            c.add_ambient_capabilities = vec!["FLY".into()];
        }
        assert!(matches!(
            capabilities(&s, &all_capabilities()),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn unknown_capability_is_an_error() {
        assert!(capabilities(&sc(&["FLY"], &[]), &all_capabilities()).is_err());
        assert!(capabilities(&sc(&[], &["FLY"]), &all_capabilities()).is_err());
    }

    #[test]
    fn privileged_gets_every_held_capability_and_no_masks() {
        let mut s = sc(&[], &["ALL"]);
        s.privileged = true;
        s.masked_paths = vec!["/proc/kcore".into()];
        s.readonly_paths = vec!["/proc/sys".into()];
        let c = capabilities(&s, &all_capabilities()).unwrap();
        assert_eq!(names(&c).len(), 41);
        assert_eq!(masked_and_readonly_paths(&s), (vec![], vec![]));
    }

    #[test]
    fn masked_and_readonly_paths_are_the_kubelets() {
        let s = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/kcore".into(), "/proc/keys".into()],
            readonly_paths: vec!["/proc/sys".into()],
            ..Default::default()
        };
        assert_eq!(
            masked_and_readonly_paths(&s),
            (
                vec!["/proc/kcore".to_string(), "/proc/keys".to_string()],
                vec!["/proc/sys".to_string()]
            )
        );
        assert_eq!(
            masked_and_readonly_paths(&Default::default()),
            (vec![], vec![])
        );
    }
}
