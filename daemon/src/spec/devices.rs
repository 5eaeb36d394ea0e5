//! Device nodes: the CRI devices of the config, or every host device for a
//! privileged container, with their device-cgroup rules.
//!
//! Mirrors containerd 1.6/1.7: `customopts.WithDevices` / `oci.WithDevices`
//! (symlinks of the host path resolved, a directory contributes every device
//! below it, each device gets an allow rule with the CRI permissions) and, for
//! privileged containers, `oci.WithHostDevices` + `oci.WithAllDevicesAllowed`
//! (the config's devices are then ignored; the allow-all rule is set by the
//! caller). Host devices are listed like runc's `devices.HostDevices`.

use super::{validate, HostView, SpecError};
use crid_proto::cri::ContainerConfig;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device node as stat(2) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Host path of the node.
    pub path: PathBuf,
    /// Character or block.
    pub typ: LinuxDeviceType,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The container's device nodes and their cgroup allow rules.
pub fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host: &dyn HostView,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    if privileged {
        let nodes = host
            .host_devices()
            .map_err(|e| SpecError::io("listing the host's devices", e))?;
        let devs = nodes
            .iter()
            .filter(|n| !(n.major == 0 && n.minor == 0))
            .map(|n| linux_device(&n.path, n))
            .collect();
        return Ok((devs, Vec::new()));
    }
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    for d in &config.devices {
        validate::container_path(&d.container_path)?;
        validate::host_path(&d.host_path)?;
        let access = permissions(&d.permissions)?;
        let nodes = host.device_nodes(Path::new(&d.host_path)).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
            ) {
                SpecError::InvalidArgument(format!("device {}: {e}", d.host_path))
            } else {
                SpecError::io(format!("device {}", d.host_path), e)
            }
        })?;
        for (rel, node) in nodes {
            let dest = if rel.as_os_str().is_empty() {
                PathBuf::from(&d.container_path)
            } else {
                Path::new(&d.container_path).join(rel)
            };
            devs.push(linux_device(&dest, &node));
            let mut rule = LinuxDeviceCgroup::default();
            rule.set_allow(true);
            rule.set_typ(Some(node.typ));
            rule.set_major(Some(node.major));
            rule.set_minor(Some(node.minor));
            rule.set_access(Some(access.clone()));
            rules.push(rule);
        }
    }
    Ok((devs, rules))
}

/// CRI permissions: one or more of r, w, m.
fn permissions(p: &str) -> Result<String, SpecError> {
    if p.is_empty() || !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::InvalidArgument(format!(
            "device permissions {p:?} must be made of r, w and m"
        )));
    }
    Ok(p.to_string())
}

fn linux_device(dest: &Path, n: &DeviceNode) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(dest.to_path_buf());
    d.set_typ(n.typ);
    d.set_major(n.major);
    d.set_minor(n.minor);
    d.set_file_mode(Some(n.file_mode));
    d.set_uid(Some(n.uid));
    d.set_gid(Some(n.gid));
    d
}

/// glibc's `major()` for a `dev_t`.
pub fn dev_major(dev: u64) -> i64 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as i64
}

/// glibc's `minor()` for a `dev_t`.
pub fn dev_minor(dev: u64) -> i64 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as i64
}

/// The node at `path` (symlinks followed) if it is a device.
fn node_of(path: &Path, md: &std::fs::Metadata) -> Option<DeviceNode> {
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    Some(DeviceNode {
        path: path.to_path_buf(),
        typ,
        major: dev_major(md.rdev()),
        minor: dev_minor(md.rdev()),
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// [`HostView::device_nodes`] on the real filesystem.
pub fn system_device_nodes(path: &Path) -> io::Result<Vec<(PathBuf, DeviceNode)>> {
    let md = std::fs::metadata(path)?;
    if md.is_dir() {
        let mut out = Vec::new();
        walk(
            path,
            &mut |p, md| {
                if let (Some(node), Ok(rel)) = (node_of(p, md), p.strip_prefix(path)) {
                    out.push((rel.to_path_buf(), node));
                }
            },
            &[],
        )?;
        return Ok(out);
    }
    match node_of(path, &md) {
        Some(node) => Ok(vec![(PathBuf::new(), node)]),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a device node",
        )),
    }
}

/// Directories of /dev runc's `HostDevices` does not descend into.
const SKIPPED_DEV_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// [`HostView::host_devices`] on the real /dev (without /dev/console, like runc).
pub fn system_host_devices() -> io::Result<Vec<DeviceNode>> {
    let mut out = Vec::new();
    walk(
        Path::new("/dev"),
        &mut |p, md| {
            if p != Path::new("/dev/console") {
                out.extend(node_of(p, md));
            }
        },
        &SKIPPED_DEV_DIRS,
    )?;
    Ok(out)
}

/// Depth-first walk without following symlinks.
fn walk(
    dir: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata),
    skip_dirs: &[&str],
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let md = std::fs::symlink_metadata(&path)?;
        if md.is_dir() {
            let name = entry.file_name();
            if skip_dirs.iter().any(|s| name == *s) {
                continue;
            }
            walk(&path, visit, skip_dirs)?;
        } else if !md.file_type().is_symlink() {
            visit(&path, &md);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::FakeHost;
    use crid_proto::cri::Device;

    fn node(path: &str, major: i64, minor: i64) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            typ: LinuxDeviceType::C,
            major,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 5,
        }
    }

    fn dev(c: &str, h: &str, p: &str) -> Device {
        Device {
            container_path: c.into(),
            host_path: h.into(),
            permissions: p.into(),
        }
    }

    #[test]
    fn cri_devices_and_rules() {
        let host = FakeHost::default()
            .with_device("/dev/fuse", node("/dev/fuse", 10, 229))
            .with_device_dir(
                "/dev/snd",
                vec![
                    ("controlC0", node("/dev/snd/controlC0", 116, 0)),
                    ("pcm/x", node("/dev/snd/pcm/x", 116, 3)),
                ],
            );
        let config = ContainerConfig {
            devices: vec![
                dev("/dev/fuse", "/dev/fuse", "rwm"),
                dev("/dev/sound", "/dev/snd", "r"),
            ],
            ..Default::default()
        };
        let (devs, rules) = devices(&config, false, &host).unwrap();
        let paths: Vec<String> = devs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert_eq!(
            paths,
            vec!["/dev/fuse", "/dev/sound/controlC0", "/dev/sound/pcm/x"]
        );
        assert_eq!((devs[0].major(), devs[0].minor()), (10, 229));
        assert_eq!(devs[0].file_mode(), Some(0o666));
        assert_eq!(devs[0].gid(), Some(5));
        assert_eq!(rules.len(), 3);
        assert!(rules[0].allow());
        assert_eq!(rules[0].to_string(), "c 10:229 rwm");
        assert_eq!(rules[2].to_string(), "c 116:3 r");
    }

    #[test]
    fn bad_devices_are_rejected() {
        let host = FakeHost::default().with_device("/dev/fuse", node("/dev/fuse", 10, 229));
        for d in [
            dev("/dev/fuse", "/dev/fuse", "rwx"),
            dev("/dev/fuse", "/dev/fuse", ""),
            dev("dev/fuse", "/dev/fuse", "r"),
            dev("/dev/fuse", "/dev/../etc/passwd", "r"),
            dev("/dev/nope", "/dev/nope", "r"),
        ] {
            let config = ContainerConfig {
                devices: vec![d.clone()],
                ..Default::default()
            };
            assert!(
                matches!(
                    devices(&config, false, &host),
                    Err(SpecError::InvalidArgument(_))
                ),
                "{d:?}"
            );
        }
    }

    #[test]
    fn privileged_takes_host_devices_and_ignores_config() {
        let host = FakeHost::default().with_host_devices(vec![
            node("/dev/null", 1, 3),
            node("/dev/weird", 0, 0),
            node("/dev/sda", 8, 0),
        ]);
        let config = ContainerConfig {
            devices: vec![dev("/dev/x", "/dev/x", "r")],
            ..Default::default()
        };
        let (devs, rules) = devices(&config, true, &host).unwrap();
        let paths: Vec<String> = devs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert_eq!(paths, vec!["/dev/null", "/dev/sda"]);
        assert!(rules.is_empty());
    }

    #[test]
    fn dev_t_split() {
        // makedev(1, 3) and makedev(259, 70000) as glibc encodes them.
        let mk = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        assert_eq!((dev_major(mk(1, 3)), dev_minor(mk(1, 3))), (1, 3));
        assert_eq!(
            (dev_major(mk(259, 70000)), dev_minor(mk(259, 70000))),
            (259, 70000)
        );
    }

    #[test]
    fn system_lookup_of_real_nodes() {
        let nodes = system_device_nodes(Path::new("/dev/null")).unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].1.major, nodes[0].1.minor), (1, 3));
        assert_eq!(nodes[0].1.typ, LinuxDeviceType::C);
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = system_device_nodes(file.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let all = system_host_devices().unwrap();
        assert!(all.iter().any(|n| n.path == Path::new("/dev/null")));
        assert!(all.iter().all(|n| !n.path.starts_with("/dev/pts")));
    }
}
