//! The idmapped root filesystem of a container in a user-namespaced pod.
//!
//! containerd 1.6's overlay snapshotter hands out plain overlay mounts, and
//! runc 1.1 has no idmap mount option, so crid mounts the container's rootfs
//! itself at StartContainer and gives the task no rootfs mounts (the spec's
//! root points at the absolute path instead):
//!
//! 1. the snapshot's upper dir (empty: the container's own writes) is
//!    chowned to the host ids of the pod's root, as containerd 2's
//!    snapshotter does for remapped snapshots;
//! 2. every lower layer (the image, shared with other containers and left
//!    untouched on disk) is cloned with `open_tree(OPEN_TREE_CLONE)`,
//!    idmapped with the pod's user namespace (`mount_setattr`), and attached
//!    under a scratch dir (overlayfs refuses layers from detached mounts);
//! 3. an overlay is built with the new mount API (`fsopen`, one
//!    `lowerdir+` fd per layer, so the number of layers is not limited by the
//!    mount data page) and moved to `<runtime_dir>/containers/<id>/rootfs`;
//! 4. the scratch mounts are detached (overlayfs holds its own clones).
//!
//! Overlayfs itself cannot be idmapped (EINVAL on this kernel line), hence
//! idmapped layers. A file the image owns as root is seen as root by the
//! container's root; what the container writes lands in the upper dir
//! owned by the pod's host ids.
//!
//! runc resolves the rootfs path as the container's root (in the user
//! namespace), so every dir above it must be searchable by others; the
//! support probe checks that once for `<runtime_dir>/containers`.

use super::sys;
use crate::error::{Error, Result};
use crid_proto::containerd::types::Mount;
use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen,
    move_mount, open_tree, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
    OpenTreeFlags,
};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Where a container's idmapped rootfs is mounted.
pub fn target(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("containers").join(id).join("rootfs")
}

/// Scratch dir of the idmapped layers while an overlay is built.
fn scratch(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("containers").join(id).join("layers")
}

/// A containerd overlay mount, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Lower dirs, topmost first (overlayfs order).
    pub lower: Vec<PathBuf>,
    /// The writable upper dir.
    pub upper: PathBuf,
    /// Overlayfs's work dir.
    pub work: PathBuf,
    /// Every other option: `key=value` or a flag.
    pub options: Vec<(String, Option<String>)>,
}

fn checked_path(what: &str, p: &str) -> Result<PathBuf> {
    let path = PathBuf::from(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::Internal(format!(
            "snapshot mount {what} {p:?} is not an absolute path without .."
        )));
    }
    Ok(path)
}

/// The overlay of a container's writable snapshot (containerd's
/// Snapshots.Mounts); anything else cannot be idmapped by crid.
pub fn overlay(mounts: &[Mount]) -> Result<Overlay> {
    let [m] = mounts else {
        return Err(Error::FailedPrecondition(format!(
            "an idmapped rootfs needs one snapshot mount, containerd gave {}",
            mounts.len()
        )));
    };
    if m.r#type != "overlay" {
        return Err(Error::FailedPrecondition(format!(
            "an idmapped rootfs needs an overlay snapshot (the overlayfs snapshotter), got a {:?} mount",
            m.r#type
        )));
    }
    let (mut lower, mut upper, mut work, mut options) = (Vec::new(), None, None, Vec::new());
    for o in &m.options {
        match o.split_once('=') {
            Some(("lowerdir", v)) => {
                for l in v.split(':') {
                    lower.push(checked_path("lowerdir", l)?);
                }
            }
            Some(("upperdir", v)) => upper = Some(checked_path("upperdir", v)?),
            Some(("workdir", v)) => work = Some(checked_path("workdir", v)?),
            Some((k, v)) => options.push((k.to_string(), Some(v.to_string()))),
            // rw is the default; anything else is a flag for overlayfs.
            None if o == "rw" => {}
            None if o == "ro" => {
                return Err(Error::FailedPrecondition(
                    "a read-only snapshot cannot be a container's rootfs".into(),
                ))
            }
            None => options.push((o.clone(), None)),
        }
    }
    match (upper, work) {
        (Some(upper), Some(work)) if !lower.is_empty() => Ok(Overlay {
            lower,
            upper,
            work,
            options,
        }),
        _ => Err(Error::FailedPrecondition(format!(
            "snapshot mount {:?} lacks lowerdir, upperdir or workdir",
            m.options
        ))),
    }
}

/// Mounts crid made under a dir (idmapped layers, volumes): detached and
/// their mount points removed on drop, one by one, never recursively (a
/// dir still mounted would be the image or the volume itself).
struct Scratch {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.mounted {
            if let Err(e) = unmount_all(p) {
                tracing::error!(path = %p.display(), error = %e, "detaching an idmapped layer");
            }
            // A mount point is a dir, or a file for a file volume.
            let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn os(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

fn rx(what: String) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |e| Error::Internal(format!("{what}: {}", std::io::Error::from(e)))
}

/// What the kernel logged on an fs context (overlayfs says why it refused).
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

/// Mounts `ov` at `target` with every lower layer idmapped by the user
/// namespace `userns`; `root` is the host (uid, gid) of the namespace's
/// root, which gets the upper dir. `scratch` must not exist yet.
pub fn mount_overlay(
    ov: &Overlay,
    userns: &impl AsFd,
    root: (u32, u32),
    target: &Path,
    scratch: &Path,
) -> Result<()> {
    std::os::unix::fs::lchown(&ov.upper, Some(root.0), Some(root.1)).map_err(os(format!(
        "giving {} to the pod's root",
        ov.upper.display()
    )))?;
    std::fs::create_dir(scratch).map_err(os(format!("creating {}", scratch.display())))?;
    let mut layers = Scratch {
        dir: scratch.to_path_buf(),
        mounted: Vec::new(),
    };
    let fs =
        fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(rx("fsopen(overlay)".into()))?;
    for (i, lower) in ov.lower.iter().enumerate() {
        let at = scratch.join(i.to_string());
        std::fs::create_dir(&at).map_err(os(format!("creating {}", at.display())))?;
        layers.mounted.push(at.clone());
        attach_idmapped(lower, userns, false, &at)?;
        let dir = rustix::fs::open(
            &at,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(rx(format!("opening {}", at.display())))?;
        fsconfig_set_fd(fs.as_fd(), "lowerdir+", dir.as_fd()).map_err(|e| {
            Error::FailedPrecondition(format!(
                "overlayfs refused idmapped layer {} (it needs Linux 6.13 or later): {} {}",
                lower.display(),
                std::io::Error::from(e),
                fs_log(&fs)
            ))
        })?;
    }
    let set = |k: &str, v: &Path| {
        fsconfig_set_string(fs.as_fd(), k, v).map_err(rx(format!("overlay {k}={}", v.display())))
    };
    set("upperdir", &ov.upper)?;
    set("workdir", &ov.work)?;
    for (k, v) in &ov.options {
        match v {
            Some(v) => fsconfig_set_string(fs.as_fd(), k.as_str(), v.as_str()),
            None => fsconfig_set_flag(fs.as_fd(), k.as_str()),
        }
        .map_err(rx(format!("overlay option {k}")))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| {
        Error::Internal(format!(
            "creating the overlay: {} {}",
            std::io::Error::from(e),
            fs_log(&fs)
        ))
    })?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(rx("fsmount(overlay)".into()))?;
    move_mount(
        mnt.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(rx(format!("mounting the rootfs at {}", target.display())))?;
    drop(layers);
    Ok(())
}

/// Attaches at `at` (an existing dir or file) an idmapped clone of the mount
/// tree at `source` (`recursive`: its submounts too), mapped by the user
/// namespace `userns`.
pub(super) fn attach_idmapped(
    source: &Path,
    userns: &impl AsFd,
    recursive: bool,
    at: &Path,
) -> Result<()> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree =
        open_tree(CWD, source, flags).map_err(rx(format!("cloning {}", source.display())))?;
    sys::set_idmap(tree.as_fd(), userns.as_fd(), recursive).map_err(|e| {
        Error::FailedPrecondition(format!(
            "{} cannot be idmapped (its filesystem must support idmapped mounts): {e}",
            source.display()
        ))
    })?;
    move_mount(
        tree.as_fd(),
        "",
        CWD,
        at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(rx(format!(
        "attaching an idmapped clone at {}",
        at.display()
    )))
}

/// Mounts container `id`'s idmapped rootfs from its snapshot's mounts, in
/// the pod's user namespace pinned at `userns_pin`; returns the path the
/// spec's root points at. Blocking.
pub fn mount(
    runtime_dir: &Path,
    id: &str,
    mounts: &[Mount],
    userns_pin: &Path,
    root: (u32, u32),
) -> Result<PathBuf> {
    let ov = overlay(mounts)?;
    let userns = std::fs::File::open(userns_pin).map_err(os(format!(
        "opening the pod's user namespace {}",
        userns_pin.display()
    )))?;
    // Leftovers of a crid that died half-way are cleared first (not the
    // volumes, attached at create for this very start).
    unmount_dirs(runtime_dir, id, false)?;
    let target = target(runtime_dir, id);
    std::fs::create_dir_all(&target).map_err(os(format!("creating {}", target.display())))?;
    // The container's root resolves the path from inside its namespace.
    let dir = target.parent().unwrap_or(runtime_dir);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(os(format!("opening up {}", dir.display())))?;
    mount_overlay(&ov, &userns, root, &target, &scratch(runtime_dir, id))?;
    Ok(target)
}

/// Unmounts `p` until it is no longer a mount point (it may be stacked).
fn unmount_all(p: &Path) -> std::io::Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "{} is still mounted after 16 unmounts",
        p.display()
    )))
}

/// Unmounts what crid mounted for container `id` in a user-namespaced pod:
/// its idmapped rootfs, its idmapped volumes ([`super::volumes`]) and any
/// scratch layer a crid that died mid-mount left; nothing mounted is fine.
/// Idempotent; run when the task is gone and before the container's
/// runtime dir is removed.
pub fn unmount(runtime_dir: &Path, id: &str) -> Result<()> {
    unmount_dirs(runtime_dir, id, true)
}

/// [`unmount`], the volumes only if `volumes`.
fn unmount_dirs(runtime_dir: &Path, id: &str, volumes: bool) -> Result<()> {
    // The rootfs, and the image's /etc view a crid that died while
    // creating the container may have left.
    for p in [
        target(runtime_dir, id),
        crate::container::rootfs::view_dir(runtime_dir, id),
    ] {
        unmount_all(&p).map_err(os(format!("unmounting {}", p.display())))?;
    }
    let mut dirs = vec![scratch(runtime_dir, id)];
    if volumes {
        dirs.push(super::volumes::dir(runtime_dir, id));
    }
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mounted: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            for p in &mounted {
                unmount_all(p).map_err(os(format!("unmounting {}", p.display())))?;
            }
            drop(Scratch { dir, mounted });
        }
    }
    Ok(())
}

/// Removes container `id`'s runtime dir, after [`unmount`], and only when
/// nothing below it is mounted any more: a recursive removal must never
/// reach into an image layer or a volume.
pub fn remove_container_dir(runtime_dir: &Path, id: &str) -> Result<()> {
    unmount(runtime_dir, id)?;
    let dir = runtime_dir.join("containers").join(id);
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(os("reading /proc/self/mountinfo".into()))?;
    let busy = mounted_below(&info, &dir);
    if !busy.is_empty() {
        return Err(Error::Internal(format!(
            "not removing {}: still mounted below it: {busy:?}",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Internal(format!("removing {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// At start: removes the runtime dirs of containers crid has no record of
/// (a crid that died in CreateContainer), detaching what is mounted there
/// first; `known` says whether a container id has a record.
pub fn sweep_orphans(runtime_dir: &Path, known: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(runtime_dir.join("containers")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if known(&name) || crid_common::ids::check_component("container id", &name).is_err() {
            continue;
        }
        match remove_container_dir(runtime_dir, &name) {
            Ok(()) => {
                tracing::info!(container = %name, "removed the runtime dir of an unrecorded container")
            }
            Err(e) => {
                tracing::error!(container = %name, error = %e, "removing the runtime dir of an unrecorded container")
            }
        }
    }
}

/// Mount points at or below `dir` in the text of /proc/self/mountinfo.
fn mounted_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(crate::spec::mounts::unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(typ: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: typ.into(),
            source: "overlay".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_overlay_options_are_taken_apart() {
        let got = overlay(&[m(
            "overlay",
            &[
                "index=off",
                "workdir=/s/snapshots/9/work",
                "upperdir=/s/snapshots/9/fs",
                "lowerdir=/s/snapshots/2/fs:/s/snapshots/1/fs",
                "userxattr",
                "rw",
            ],
        )])
        .unwrap();
        assert_eq!(
            got,
            Overlay {
                lower: vec!["/s/snapshots/2/fs".into(), "/s/snapshots/1/fs".into()],
                upper: "/s/snapshots/9/fs".into(),
                work: "/s/snapshots/9/work".into(),
                options: vec![
                    ("index".into(), Some("off".into())),
                    ("userxattr".into(), None)
                ],
            }
        );
    }

    #[test]
    fn what_cannot_be_idmapped_is_refused() {
        for (mounts, why) in [
            (vec![], "one snapshot mount"),
            (
                vec![m("bind", &["rbind", "rw"]), m("bind", &["rbind"])],
                "one snapshot mount",
            ),
            (vec![m("bind", &["rbind", "rw"])], "overlay snapshot"),
            (
                vec![m("overlay", &["lowerdir=/a", "ro"])],
                "read-only snapshot",
            ),
            (
                vec![m("overlay", &["lowerdir=/a", "upperdir=/u"])],
                "lacks lowerdir, upperdir or workdir",
            ),
            (
                vec![m("overlay", &["upperdir=/u", "workdir=/w"])],
                "lacks lowerdir",
            ),
            (
                vec![m(
                    "overlay",
                    &["lowerdir=rel/a", "upperdir=/u", "workdir=/w"],
                )],
                "not an absolute path",
            ),
            (
                vec![m(
                    "overlay",
                    &["lowerdir=/a/../../etc", "upperdir=/u", "workdir=/w"],
                )],
                "without ..",
            ),
        ] {
            let e = overlay(&mounts).unwrap_err().to_string();
            assert!(e.contains(why), "{mounts:?}: {e}");
        }
    }

    #[test]
    fn mounts_below_a_dir_are_found() {
        let info = "36 25 0:30 / /run/crid/containers/c1/rootfs rw - overlay overlay rw\n\
                    37 25 0:31 / /run/crid/containers/c1/volumes/0 rw - ext4 /dev/vda rw\n\
                    38 25 0:32 / /run/crid/containers/c10 rw - tmpfs tmpfs rw\n\
                    39 25 0:33 / /run/crid/containers/c1\\040x rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mounted_below(info, Path::new("/run/crid/containers/c1")),
            vec![
                PathBuf::from("/run/crid/containers/c1/rootfs"),
                PathBuf::from("/run/crid/containers/c1/volumes/0"),
            ]
        );
    }

    #[test]
    fn unmounting_nothing_is_fine() {
        let d = tempfile::tempdir().unwrap();
        unmount(d.path(), "c1").unwrap();
        std::fs::create_dir_all(scratch(d.path(), "c1").join("0")).unwrap();
        unmount(d.path(), "c1").unwrap();
        assert!(!scratch(d.path(), "c1").exists(), "empty scratch dirs go");
        std::fs::create_dir_all(target(d.path(), "c1")).unwrap();
        remove_container_dir(d.path(), "c1").unwrap();
        assert!(!d.path().join("containers/c1").exists());
        remove_container_dir(d.path(), "c1").unwrap();
        // Only unrecorded containers' dirs are swept.
        for id in ["kept", "orphan"] {
            std::fs::create_dir_all(scratch(d.path(), id)).unwrap();
        }
        sweep_orphans(d.path(), |id| id == "kept");
        assert!(d.path().join("containers/kept").exists());
        assert!(!d.path().join("containers/orphan").exists());
    }
}
