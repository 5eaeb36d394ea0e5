//! Idmapped volume mounts (CRI `Mount.uidMappings`/`gidMappings`).
//!
//! For a pod in a user namespace the kubelet sets every mount's mappings
//! to the pod's, so that files it made as host root (configmaps, tokens,
//! /etc/hosts, the termination log) appear owned by the pod's root instead
//! of nobody. runc 1.1 cannot idmap a bind mount, so crid does it: at
//! CreateContainer it clones each such source (`open_tree(OPEN_TREE_CLONE |
//! AT_RECURSIVE)`), idmaps the clone with the pod's user namespace and
//! attaches it at `<runtime_dir>/containers/<id>/volumes/<n>`, and the spec
//! binds that instead. The clones are detached with the rootfs
//! ([`super::rootfs::unmount`]) when the task is gone or the container is
//! removed.
//!
//! Only the pod's own mappings are accepted (there is no other user
//! namespace to idmap with), and only private propagation: a clone is not
//! a peer of its source, so mounts made later on either side would not be
//! seen on the other.

use crate::error::{Error, Result};
use crid_common::protocol::{IdMap, UserNamespace};
use crid_proto::cri;
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// Where a container's idmapped volume clones are attached.
pub fn dir(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("containers").join(id).join("volumes")
}

fn ids(maps: &[cri::IdMapping]) -> Vec<IdMap> {
    maps.iter()
        .map(|m| IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
        .collect()
}

/// Takes the idmapping requests out of `config`'s mounts (the spec
/// generator refuses mappings, as runc cannot apply them) after checking
/// them against the pod's user namespace; returns the container paths of
/// the mounts to idmap.
pub fn take(config: &mut cri::ContainerConfig, pod: Option<&UserNamespace>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for m in &mut config.mounts {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
            continue;
        }
        let Some(pod) = pod else {
            return Err(Error::InvalidArgument(format!(
                "mount {} asks for an idmapped mount, but its pod has no user namespace to map into",
                m.container_path
            )));
        };
        if ids(&m.uid_mappings) != pod.uids || ids(&m.gid_mappings) != pod.gids {
            return Err(Error::InvalidArgument(format!(
                "mount {}: crid idmaps volumes only with the pod's own mappings (uid map {:?}, gid map {:?})",
                m.container_path,
                pod.map_text(true).trim(),
                pod.map_text(false).trim()
            )));
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(Error::InvalidArgument(format!(
                "mount {}: an idmapped mount must have private propagation",
                m.container_path
            )));
        }
        m.uid_mappings.clear();
        m.gid_mappings.clear();
        out.push(m.container_path.clone());
    }
    Ok(out)
}

/// Replaces the source of every bind mount of `spec` whose destination is
/// in `idmapped` by an idmapped clone of it (blocking). On error, what was
/// attached is detached by [`super::rootfs::unmount`] (CreateContainer's
/// undo removes the container's dir through it).
pub fn mount(
    spec: &mut Spec,
    idmapped: &[String],
    runtime_dir: &Path,
    id: &str,
    userns_pin: &Path,
) -> Result<()> {
    if idmapped.is_empty() {
        return Ok(());
    }
    let io = |what: String| move |e: std::io::Error| Error::Internal(format!("{what}: {e}"));
    let userns = std::fs::File::open(userns_pin).map_err(io(format!(
        "opening the pod's user namespace {}",
        userns_pin.display()
    )))?;
    let base = dir(runtime_dir, id);
    std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut n = 0;
    for m in mounts.iter_mut() {
        let dest = m.destination().display().to_string();
        if !idmapped.contains(&dest) || m.typ().as_deref() != Some("bind") {
            continue;
        }
        let Some(source) = m.source().clone() else {
            continue;
        };
        let at = base.join(n.to_string());
        n += 1;
        if std::fs::metadata(&source)
            .map_err(io(format!("volume source {}", source.display())))?
            .is_dir()
        {
            std::fs::create_dir(&at)
        } else {
            std::fs::File::create(&at).map(drop)
        }
        .map_err(io(format!("creating {}", at.display())))?;
        super::rootfs::attach_idmapped(&source, &userns, true, &at)?;
        m.set_source(Some(at));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(host_id: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id: 0,
            host_id,
            length: 65536,
        }
    }

    fn pod() -> UserNamespace {
        UserNamespace {
            uids: ids(&[map(65536)]),
            gids: ids(&[map(65536)]),
        }
    }

    fn config(mounts: Vec<cri::Mount>) -> cri::ContainerConfig {
        cri::ContainerConfig {
            mounts,
            ..Default::default()
        }
    }

    fn mnt(
        path: &str,
        uids: Vec<cri::IdMapping>,
        propagation: cri::MountPropagation,
    ) -> cri::Mount {
        cri::Mount {
            container_path: path.into(),
            host_path: "/var/lib/kubelet/x".into(),
            uid_mappings: uids.clone(),
            gid_mappings: uids,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_kubelets_mappings_are_taken_out_and_checked() {
        use cri::MountPropagation::*;
        let mut c = config(vec![
            mnt("/data", vec![map(65536)], PropagationPrivate),
            mnt("/plain", vec![], PropagationPrivate),
        ]);
        assert_eq!(
            take(&mut c, Some(&pod())).unwrap(),
            vec!["/data".to_string()]
        );
        assert!(c
            .mounts
            .iter()
            .all(|m| m.uid_mappings.is_empty() && m.gid_mappings.is_empty()));
        // Nothing to do without mappings, with or without a user namespace.
        let mut c = config(vec![mnt("/plain", vec![], PropagationBidirectional)]);
        assert!(take(&mut c, None).unwrap().is_empty());

        for (m, pod, why) in [
            (
                mnt("/a", vec![map(65536)], PropagationPrivate),
                None,
                "no user namespace",
            ),
            (
                mnt("/b", vec![map(1000)], PropagationPrivate),
                Some(pod()),
                "pod's own mappings",
            ),
            (
                mnt("/c", vec![map(65536)], PropagationHostToContainer),
                Some(pod()),
                "private propagation",
            ),
        ] {
            let mut c = config(vec![m]);
            let e = take(&mut c, pod.as_ref()).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(s) if s.contains(why)),
                "{e}"
            );
        }
    }
}
