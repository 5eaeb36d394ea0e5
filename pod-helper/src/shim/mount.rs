//! The container's rootfs as containerd hands it to a shim (the writable
//! snapshot's mounts), mounted at `<bundle>/rootfs`.

use nix::mount::MsFlags;
use std::path::Path;

/// One mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`, …).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options in fstab words.
    pub options: Vec<String>,
}

/// Splits fstab options into mount flags and the filesystem's data string.
pub fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts `mounts` in order onto `target`; on failure, what was mounted is
/// unmounted again.
pub fn mount_all(mounts: &[RootfsMount], target: &Path) -> std::io::Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let (flags, data) = flags_and_data(&m.options);
        let kind = if flags.contains(MsFlags::MS_BIND) {
            None
        } else {
            Some(m.kind.as_str())
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        let r = nix::mount::mount(Some(m.source.as_str()), target, kind, flags, data);
        if let Err(e) = r {
            for _ in 0..i {
                unmount(target);
            }
            return Err(std::io::Error::other(format!(
                "mounting {} ({}) at {}: {e}",
                m.source,
                m.kind,
                target.display()
            )));
        }
        // A read-only bind needs a remount to take effect.
        if kind.is_none() && flags.contains(MsFlags::MS_RDONLY) {
            let _ = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            );
        }
    }
    Ok(())
}

/// Unmounts whatever is mounted at `target` (once); absent is fine.
pub fn unmount(target: &Path) {
    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let (f, d) = flags_and_data(&s(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
        ]));
        assert_eq!(f, MsFlags::empty());
        assert_eq!(d, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
    }

    #[test]
    fn bind_options_become_flags() {
        let (f, d) = flags_and_data(&s(&["ro", "rbind"]));
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(d, "");
    }
}
