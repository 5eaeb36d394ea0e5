//! Whether this node can run user-namespaced pods: the `user_namespaces`
//! feature crid advertises per runtime handler in `Status`, and the check
//! RunPodSandbox makes before accepting mode POD.
//!
//! The probe does, once, what a user-namespaced container needs:
//! - `<runtime_dir>/containers` exists and every dir above it is searchable
//!   by others (runc resolves the rootfs path as the pod's mapped root);
//! - a user namespace can be made and mapped;
//! - an idmapped mount works on the snapshotter's filesystem (its root from
//!   containerd's introspection service), like critest's own check;
//! - an overlay on idmapped layers given by fd mounts (the exact code path
//!   of [`super::rootfs::mount_overlay`], on scratch dirs under the runtime
//!   dir).
//!
//! The answer is cached once containerd has answered: the kernel and the
//! filesystems do not change under a running crid (a restart probes again).

use crate::containerd::Containerd;
use crid_common::config::Config;
use crid_proto::containerd::services::v1::PluginsRequest;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The cached answer of the probe.
#[derive(Default)]
pub struct Support {
    state: tokio::sync::Mutex<Option<Result<(), String>>>,
}

/// Why the snapshotter's root is unknown.
enum RootError {
    /// containerd did not answer: ask again later.
    Transient(String),
    /// The answer will not change.
    Final(String),
}

impl Support {
    /// Ok when pods may have their own user namespace; Err says why not.
    pub async fn check(&self, containerd: &Containerd, config: &Config) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if let Some(r) = state.as_ref() {
            return r.clone();
        }
        let r = match snapshotter_root(containerd, &config.containerd.snapshotter).await {
            Err(RootError::Transient(why)) => return Err(why),
            Err(RootError::Final(why)) => Err(why),
            Ok(root) => {
                let runtime_dir = config.runtime_dir.clone();
                tokio::task::spawn_blocking(move || probe(&root, &runtime_dir))
                    .await
                    .unwrap_or_else(|e| Err(format!("the probe task failed: {e}")))
            }
        };
        match &r {
            Ok(()) => tracing::info!("user namespaces supported (idmapped overlay layers work)"),
            Err(why) => tracing::warn!(reason = %why, "user namespaces not supported"),
        }
        *state = Some(r.clone());
        r
    }
}

/// The overlayfs snapshotter's root dir, from containerd's introspection.
async fn snapshotter_root(
    containerd: &Containerd,
    snapshotter: &str,
) -> Result<PathBuf, RootError> {
    if snapshotter != "overlayfs" {
        return Err(RootError::Final(format!(
            "idmapped container root filesystems need the overlayfs snapshotter, crid uses {snapshotter:?}"
        )));
    }
    let plugins =
        crid_proto::containerd::services::v1::introspection_client::IntrospectionClient::new(
            containerd.channel(),
        )
        .plugins(containerd.request(PluginsRequest {
            filters: vec![format!(
                "type==io.containerd.snapshotter.v1,id=={snapshotter}"
            )],
        }))
        .await
        .map_err(|e| RootError::Transient(format!("asking containerd for its snapshotter: {e}")))?
        .into_inner()
        .plugins;
    let Some(p) = plugins.first() else {
        return Err(RootError::Final(format!(
            "containerd has no {snapshotter} snapshotter"
        )));
    };
    if let Some(e) = &p.init_err {
        return Err(RootError::Final(format!(
            "containerd's {snapshotter} snapshotter failed to start: {}",
            e.message
        )));
    }
    match p.exports.get("root") {
        Some(root) if Path::new(root).is_absolute() => Ok(PathBuf::from(root)),
        _ => Err(RootError::Final(format!(
            "containerd does not say where its {snapshotter} snapshotter keeps its data"
        ))),
    }
}

/// Every dir from `dir` up to `/` must let others search it.
fn searchable_by_others(dir: &Path) -> Result<(), String> {
    for d in dir.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not searchable by other users, so a container's root in its \
                 user namespace could not reach its rootfs under {}",
                d.display(),
                mode & 0o7777,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// The probe itself (blocking).
pub fn probe(snapshotter_root: &Path, runtime_dir: &Path) -> Result<(), String> {
    let containers = runtime_dir.join("containers");
    std::fs::create_dir_all(&containers)
        .and_then(|()| {
            std::fs::set_permissions(&containers, std::fs::Permissions::from_mode(0o711))
        })
        .map_err(|e| format!("preparing {}: {e}", containers.display()))?;
    searchable_by_others(&containers)?;

    let userns = super::sys::throwaway_userns("0 1000 65536\n")
        .map_err(|e| format!("creating a user namespace: {e}"))?;

    use rustix::mount::{open_tree, OpenTreeFlags};
    use std::os::fd::AsFd;
    let tree = open_tree(
        rustix::fs::CWD,
        snapshotter_root,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| {
        format!(
            "open_tree({}): {}",
            snapshotter_root.display(),
            std::io::Error::from(e)
        )
    })?;
    super::sys::set_idmap(tree.as_fd(), userns.as_fd(), false).map_err(|e| {
        format!(
            "idmapped mounts are not supported on the filesystem of {}: {e}",
            snapshotter_root.display()
        )
    })?;
    drop(tree);

    // The whole rootfs path on scratch dirs.
    let dir = runtime_dir.join(format!("userns-probe-{}", std::process::id()));
    let r = overlay_on_scratch(&dir, &userns);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn overlay_on_scratch(dir: &Path, userns: &impl std::os::fd::AsFd) -> Result<(), String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    for d in ["lower", "upper", "work", "target"] {
        std::fs::create_dir_all(dir.join(d)).map_err(io("making probe dirs"))?;
    }
    std::fs::write(dir.join("lower/probe"), b"x").map_err(io("writing a probe file"))?;
    let ov = super::rootfs::Overlay {
        lower: vec![dir.join("lower")],
        upper: dir.join("upper"),
        work: dir.join("work"),
        options: vec![("index".into(), Some("off".into()))],
    };
    let target = dir.join("target");
    super::rootfs::mount_overlay(&ov, userns, (1000, 1000), &target, &dir.join("layers"))
        .map_err(|e| format!("an overlay on idmapped layers: {e}"))?;
    // The image's root-owned file appears owned by the namespace's root,
    // i.e. host uid 1000 from outside.
    let owner = std::fs::metadata(target.join("probe")).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    match owner {
        Ok(1000) => Ok(()),
        Ok(uid) => Err(format!(
            "an idmapped overlay layer shows a root-owned file as uid {uid}, not 1000"
        )),
        Err(e) => Err(format!("reading through the idmapped overlay: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsearchable_dirs_are_named() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let e = searchable_by_others(&inner).unwrap_err();
        assert!(e.contains("/a (mode 700) is not searchable"), "{e}");
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        // /tmp and / are searchable on any sane host.
        searchable_by_others(&inner).unwrap();
    }

    /// The real probe on this machine (root, a kernel with idmapped overlay
    /// layers): the scratch overlay shows root-owned files as the mapped root.
    #[test]
    fn the_probe_passes_here_and_leaves_nothing() {
        let d = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        probe(Path::new("/var/lib"), d.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("containers")]);
    }
}
