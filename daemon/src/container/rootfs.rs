//! The image's /etc/passwd and /etc/group for user resolution, read from the
//! container's prepared snapshot mounted read-only on first use only (a spec
//! that never needs them never mounts anything). Unmounted on drop.

use crate::spec::user::{RootfsDir, RootfsFiles};
use crid_proto::containerd::types::Mount;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a containerd mount is applied: flags and the data string.
#[derive(Debug, PartialEq, Eq)]
pub struct MountPlan {
    /// Bind mount (the `bind`/`rbind` options or type).
    pub bind: bool,
    /// Recursive bind.
    pub recursive: bool,
    /// Filesystem-specific options (overlay's lowerdir=..., etc.).
    pub data: Vec<String>,
}

/// Splits containerd's mount options into flags crid applies itself and the
/// filesystem data; the mount is always read-only (crid only reads files).
pub fn plan(m: &Mount) -> MountPlan {
    let mut p = MountPlan {
        bind: m.r#type == "bind",
        recursive: false,
        data: Vec::new(),
    };
    for o in &m.options {
        match o.as_str() {
            "bind" => p.bind = true,
            "rbind" => {
                p.bind = true;
                p.recursive = true;
            }
            "ro" | "rw" => {}
            other => p.data.push(other.to_string()),
        }
    }
    p
}

/// [`RootfsFiles`] over a snapshot's mounts, mounted at `target` on demand.
pub struct SnapshotRootfs {
    mounts: Vec<Mount>,
    target: PathBuf,
    mounted: Mutex<bool>,
}

impl SnapshotRootfs {
    /// Nothing is mounted until a file is read.
    pub fn new(mounts: Vec<Mount>, target: PathBuf) -> SnapshotRootfs {
        SnapshotRootfs {
            mounts,
            target,
            mounted: Mutex::new(false),
        }
    }

    fn mount(&self) -> io::Result<()> {
        mount_read_only(&self.mounts, &self.target)
    }
}

/// Mounts a snapshot's one containerd mount read-only at `target` (created
/// if missing): a bind is bound then remounted read-only, anything else
/// (overlay) is mounted with MS_RDONLY and its options as data.
pub fn mount_read_only(mounts: &[Mount], target: &Path) -> io::Result<()> {
    use nix::mount::MsFlags;
    let [m] = mounts else {
        return Err(io::Error::other(format!(
            "expected one snapshot mount, containerd gave {}",
            mounts.len()
        )));
    };
    std::fs::create_dir_all(target)?;
    let p = plan(m);
    let data = p.data.join(",");
    if p.bind {
        let mut flags = MsFlags::MS_BIND;
        if p.recursive {
            flags |= MsFlags::MS_REC;
        }
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )?;
        // A bind mount becomes read-only only by a remount.
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
    } else {
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.r#type.as_str()),
            MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )?;
    }
    Ok(())
}

impl RootfsFiles for SnapshotRootfs {
    fn etc_file(&self, name: &str) -> io::Result<Option<String>> {
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if !*mounted {
            self.mount()?;
            *mounted = true;
        }
        RootfsDir(self.target.clone()).etc_file(name)
    }
}

impl Drop for SnapshotRootfs {
    fn drop(&mut self) {
        let mounted = *self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if mounted {
            if let Err(e) = crate::sandbox::files::unmount(&self.target) {
                tracing::error!(path = %self.target.display(), error = %e, "unmounting the image view");
            }
        }
        let _ = std::fs::remove_dir(&self.target);
    }
}

/// Where the view of container `id` is mounted.
pub fn view_dir(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("containers").join(id).join("rootfs-view")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_become_data_and_binds_flags() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l".into(),
            ],
        };
        let p = plan(&m);
        assert!(!p.bind);
        assert_eq!(
            p.data.join(","),
            "index=off,workdir=/w,upperdir=/u,lowerdir=/l"
        );
        let b = Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        let p = plan(&b);
        assert!(p.bind && p.recursive);
        assert!(p.data.is_empty());
    }

    #[test]
    fn nothing_is_mounted_without_a_read() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("view");
        drop(SnapshotRootfs::new(vec![], target.clone()));
        assert!(!target.exists());
    }
}
