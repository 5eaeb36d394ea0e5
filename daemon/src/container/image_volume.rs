//! Image volumes (CRI `Mount.image`, Kubernetes' ImageVolume feature): an
//! image the kubelet pulled, mounted read-only into a container, whole or one
//! directory of it (`image_sub_path`).
//!
//! Like containerd 2.1: each volume is a read-only *view* snapshot of the
//! image's layers (key `<container id>-imgvol-<n>`), mounted by crid under
//! `<runtime_dir>/containers/<id>/image-volumes/<n>` and bound into the
//! container as an ordinary read-only bind (the spec generator never sees the
//! image). The containerd container references each view through a
//! `containerd.io/gc.ref.snapshot.<snapshotter>/<n>` label, so containerd's
//! GC keeps it while the container exists. [`cleanup`] undoes everything from
//! the directories alone, so a failed CreateContainer and RemoveContainer
//! (also after a crid restart) share it.

use crate::error::{Error, Result};
use crate::image::session::{cerr, Session};
use crate::spec::user::RootfsDir;
use crid_proto::containerd::services::v1::snapshots::snapshots_client::SnapshotsClient;
use crid_proto::containerd::services::v1::snapshots::ViewSnapshotRequest;
use crid_proto::cri;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Directory holding container `id`'s image-volume mount points.
pub fn dir(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir
        .join("containers")
        .join(id)
        .join("image-volumes")
}

/// Snapshot key of volume `n` of container `id`.
pub fn snapshot_key(id: &str, n: usize) -> String {
    format!("{id}-imgvol-{n}")
}

/// The containerd label that makes the container reference volume `n`'s view.
pub fn gc_label(snapshotter: &str, n: usize) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}/imgvol-{n}")
}

/// Checks `image_sub_path` lexically: relative, no `..`, no NUL. Empty = the
/// image root.
pub fn check_sub_path(sub: &str) -> Result<PathBuf> {
    let p = Path::new(sub);
    if sub.contains('\0') || p.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "image_sub_path {sub:?} must be a relative path"
        )));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "image_sub_path {sub:?} must not leave the image (no \"..\")"
                )))
            }
        }
    }
    Ok(out)
}

/// Rejects what an image volume cannot be before any work is done.
pub fn validate(m: &cri::Mount) -> Result<()> {
    let image = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    if image.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {}: image volume without an image name",
            m.container_path
        )));
    }
    if !m.readonly {
        // The kubelet always asks read-only; a writable image volume would
        // need a writable snapshot nobody cleans up.
        return Err(Error::InvalidArgument(format!(
            "mount {}: image volumes must be read-only",
            m.container_path
        )));
    }
    if !m.host_path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {}: an image volume has no host_path",
            m.container_path
        )));
    }
    check_sub_path(&m.image_sub_path)?;
    Ok(())
}

/// Prepares volume `n` of container `id`: a read-only view of the image
/// `chain_id`, mounted under [`dir`], with `sub` resolved inside the image.
/// The directory is made first, so [`cleanup`] finds every half-done step.
pub async fn prepare(
    s: &Session,
    snapshotter: &str,
    runtime_dir: &Path,
    id: &str,
    n: usize,
    chain_id: &str,
    sub: &str,
) -> Result<PathBuf> {
    let target = dir(runtime_dir, id).join(n.to_string());
    std::fs::create_dir_all(&target)
        .map_err(|e| Error::Internal(format!("creating {}: {e}", target.display())))?;
    let mounts = SnapshotsClient::new(s.ctrd.channel())
        .view(s.req(ViewSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: snapshot_key(id, n),
            parent: chain_id.to_string(),
            labels: HashMap::new(),
        }))
        .await
        .map_err(cerr("snapshots.view"))?
        .into_inner()
        .mounts;
    let t = target.clone();
    tokio::task::spawn_blocking(move || crate::container::rootfs::mount_read_only(&mounts, &t))
        .await
        .map_err(|e| Error::Internal(format!("image volume mount task failed: {e}")))?
        .map_err(|e| {
            Error::Internal(format!(
                "mounting image volume at {}: {e}",
                target.display()
            ))
        })?;
    let sub = check_sub_path(sub)?;
    if sub.as_os_str().is_empty() {
        return Ok(target);
    }
    // Symlinks inside the image resolve within it: an image cannot point the
    // bind at a host path.
    let host = RootfsDir(target.clone())
        .resolve_in_root(&Path::new("/").join(&sub))
        .map_err(|e| Error::Internal(format!("resolving image_sub_path {}: {e}", sub.display())))?;
    match std::fs::symlink_metadata(&host) {
        Ok(_) => Ok(host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::InvalidArgument(format!(
            "image_sub_path {:?} does not exist in the image",
            sub.display().to_string()
        ))),
        Err(e) => Err(Error::Internal(format!(
            "looking up {}: {e}",
            host.display()
        ))),
    }
}

/// Unmounts and removes every image volume of container `id` (views and
/// mount points). Safe to repeat; an absent directory means nothing to do.
pub async fn cleanup(s: &Session, snapshotter: &str, runtime_dir: &Path, id: &str) -> Result<()> {
    let root = dir(runtime_dir, id);
    let entries = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Internal(format!("listing {}: {e}", root.display()))),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        crate::sandbox::files::unmount(&path)
            .map_err(|e| Error::Internal(format!("unmounting {}: {e}", path.display())))?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<usize>().ok())
        {
            super::ctrd::remove_snapshot(s, snapshotter, &snapshot_key(id, n)).await?;
        }
        // An empty mount point after the unmount; anything else is left as
        // found rather than deleted recursively.
        if let Err(e) = std::fs::remove_dir(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::Internal(format!("removing {}: {e}", path.display())));
            }
        }
    }
    let _ = std::fs::remove_dir(&root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(image: &str, readonly: bool, sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/vol".into(),
            readonly,
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sub_paths_stay_inside_the_image() {
        assert_eq!(check_sub_path("").unwrap(), PathBuf::new());
        assert_eq!(check_sub_path("./a/b/").unwrap(), PathBuf::from("a/b"));
        for bad in ["/etc", "../x", "a/../../b", "a\0b"] {
            assert!(
                matches!(check_sub_path(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn volumes_must_name_an_image_and_be_read_only() {
        assert!(validate(&vol("busybox", true, "")).is_ok());
        assert!(validate(&vol("busybox", true, "bin")).is_ok());
        for bad in [
            vol("", true, ""),
            vol("busybox", false, ""),
            vol("busybox", true, "../etc"),
        ] {
            assert!(
                matches!(validate(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let mut with_host = vol("busybox", true, "");
        with_host.host_path = "/etc".into();
        assert!(matches!(
            validate(&with_host),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn names_are_per_container_and_index() {
        assert_eq!(snapshot_key("abc", 2), "abc-imgvol-2");
        assert_eq!(
            gc_label("overlayfs", 0),
            "containerd.io/gc.ref.snapshot.overlayfs/imgvol-0"
        );
        assert_eq!(
            dir(Path::new("/run/crid"), "abc"),
            PathBuf::from("/run/crid/containers/abc/image-volumes")
        );
    }
}
