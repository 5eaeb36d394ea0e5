//! Pod user namespaces (CRI `NamespaceOption.userns_options`).
//!
//! - Validation (here, pure): the kubelet's mappings for mode POD, NODE
//!   without mappings, CONTAINER and TARGET refused, a container's options
//!   matching its pod's.
//! - The pod's user namespace itself is made by its helper (the pod root,
//!   see the helper's `userns` module) and pinned at `<ns dir>/user`.
//! - Containers join it by path with the same mappings in their spec, and
//!   get an idmapped root filesystem crid mounts itself ([`rootfs`]): runc
//!   1.1 has no idmap mount option and containerd 1.6's overlay snapshotter
//!   does not remap.
//! - Whether this node can do all that ([`Support`]) is probed once and
//!   advertised per runtime handler in `Status`.

pub mod probe;
pub mod rootfs;
mod sys;
pub mod volumes;

pub use probe::Support;

use crate::error::{Error, Result};
use crid_common::protocol::{IdMap, UserNamespace};
use crid_proto::cri::{self, NamespaceMode};

/// The largest id a mapping may reach (4294967295 is the kernel's "no id").
const MAX_ID: u64 = u32::MAX as u64 - 1;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn mode_name(mode: i32) -> String {
    NamespaceMode::try_from(mode)
        .map(|m| m.as_str_name().to_string())
        .unwrap_or_else(|_| format!("{mode} (unknown)"))
}

/// One mapping list of mode POD: exactly one range, starting at container
/// id 0 (the kubelet gives each pod one range; root must be mapped for the
/// pod root and for the rootfs owner), within the id space.
fn one_range(what: &str, maps: &[cri::IdMapping]) -> Result<IdMap> {
    let [m] = maps else {
        return Err(invalid(format!(
            "user namespace mode POD needs exactly one {what} mapping, got {}",
            maps.len()
        )));
    };
    if m.container_id != 0 {
        return Err(invalid(format!(
            "the {what} mapping must map container id 0 (the pod's root), it starts at {}",
            m.container_id
        )));
    }
    if m.length == 0 {
        return Err(invalid(format!("the {what} mapping has length 0")));
    }
    let last_host = u64::from(m.host_id) + u64::from(m.length) - 1;
    if last_host > MAX_ID {
        return Err(invalid(format!(
            "the {what} mapping {} {} {} goes past the largest id {MAX_ID}",
            m.container_id, m.host_id, m.length
        )));
    }
    Ok(IdMap {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

/// The pod's own user namespace from its namespace options; `None` when it
/// uses the node's (no `userns_options`, as older kubelets send, or NODE).
pub fn pod_userns(opts: &cri::NamespaceOption) -> Result<Option<UserNamespace>> {
    let Some(u) = &opts.userns_options else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(invalid(format!(
                    "user namespace mode NODE takes no mappings, got {} uid and {} gid mappings",
                    u.uids.len(),
                    u.gids.len()
                )));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => {
            let ns = UserNamespace {
                uids: vec![one_range("uid", &u.uids)?],
                gids: vec![one_range("gid", &u.gids)?],
            };
            // Namespaces owned by the node's user namespace cannot be
            // administered from the pod's: its containers could not mount
            // /proc or sysfs for them (Kubernetes forbids the combination).
            for (what, mode) in [
                ("network", opts.network),
                ("PID", opts.pid),
                ("IPC", opts.ipc),
            ] {
                if mode == NamespaceMode::Node as i32 {
                    return Err(invalid(format!(
                        "a pod in its own user namespace cannot use the node's {what} namespace"
                    )));
                }
            }
            Ok(Some(ns))
        }
        _ => Err(invalid(format!(
            "user namespace mode {} is not supported: only POD and NODE are",
            mode_name(u.mode)
        ))),
    }
}

/// A container shares its pod's user namespace: its own options, when it
/// has any, must say the same as the pod's (mode and mappings), as with
/// containerd. No options at all means "the pod's".
pub fn check_container(
    opts: Option<&cri::NamespaceOption>,
    pod: Option<&UserNamespace>,
) -> Result<()> {
    let Some(asked) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(());
    };
    // Only the user namespace is compared: the other modes are the
    // container's own business (e.g. PID CONTAINER in a pod-PID pod).
    let just_userns = cri::NamespaceOption {
        userns_options: Some(asked.clone()),
        ..Default::default()
    };
    let want = pod_userns(&just_userns)
        .map_err(|e| invalid(format!("the container's user namespace options: {e}")))?;
    if want.as_ref() == pod {
        return Ok(());
    }
    let describe = |u: Option<&UserNamespace>| match u {
        None => "NODE (the node's user namespace)".to_string(),
        Some(u) => format!(
            "POD with uid map {:?} and gid map {:?}",
            u.map_text(true).trim(),
            u.map_text(false).trim()
        ),
    };
    Err(invalid(format!(
        "the container asks for user namespace {} but its pod sandbox has {}: a container shares its pod's user namespace",
        describe(want.as_ref()),
        describe(pod)
    )))
}

/// The CRI view of a pod's user namespace (PodSandboxStatus).
pub fn to_cri(u: Option<&UserNamespace>) -> cri::UserNamespace {
    let maps = |m: &[IdMap]| {
        m.iter()
            .map(|m| cri::IdMapping {
                host_id: m.host_id,
                container_id: m.container_id,
                length: m.length,
            })
            .collect()
    };
    match u {
        None => cri::UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        },
        Some(u) => cri::UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: maps(&u.uids),
            gids: maps(&u.gids),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::NamespaceOption {
        cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids,
                gids,
            }),
            ..Default::default()
        }
    }

    fn err(r: Result<Option<UserNamespace>>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn pod_mode_with_the_kubelets_mapping() {
        let got = pod_userns(&pod(vec![map(0, 1000, 100000)], vec![map(0, 2000, 65536)]))
            .unwrap()
            .unwrap();
        assert_eq!(got.map_text(true), "0 1000 100000\n");
        assert_eq!(got.map_text(false), "0 2000 65536\n");
        assert_eq!(got.host_root(), Some((1000, 2000)));
        // The last id below 2^32-1 may be mapped, not 2^32-1 itself.
        let top = u32::MAX - 65536;
        assert!(pod_userns(&pod(vec![map(0, top, 65536)], vec![map(0, 1, 1)])).is_ok());
        let m = err(pod_userns(&pod(
            vec![map(0, top + 1, 65536)],
            vec![map(0, 1, 1)],
        )));
        assert!(m.contains("goes past"), "{m}");
    }

    #[test]
    fn no_options_and_node_mode_mean_the_nodes_namespace() {
        assert_eq!(pod_userns(&cri::NamespaceOption::default()).unwrap(), None);
        let node = cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            // Host namespaces are fine without a user namespace.
            network: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(pod_userns(&node).unwrap(), None);
        let mut with_maps = node.clone();
        with_maps.userns_options.as_mut().unwrap().uids = vec![map(0, 1000, 10)];
        let m = err(pod_userns(&with_maps));
        assert!(m.contains("NODE takes no mappings"), "{m}");
    }

    #[test]
    fn what_critest_and_the_proto_refuse() {
        // More than one mapping.
        let two = vec![map(0, 1000, 100000), map(0, 2000, 100000)];
        let m = err(pod_userns(&pod(two.clone(), two)));
        assert!(m.contains("exactly one uid mapping, got 2"), "{m}");
        // Container id 0 not mapped.
        let m = err(pod_userns(&pod(
            vec![map(1, 1000, 100000)],
            vec![map(1, 1000, 100000)],
        )));
        assert!(m.contains("must map container id 0"), "{m}");
        // uids and gids are both required.
        let m = err(pod_userns(&pod(vec![map(0, 1000, 10)], vec![])));
        assert!(m.contains("exactly one gid mapping, got 0"), "{m}");
        let m = err(pod_userns(&pod(vec![], vec![map(0, 1000, 10)])));
        assert!(m.contains("uid mapping, got 0"), "{m}");
        let m = err(pod_userns(&pod(
            vec![map(0, 1000, 0)],
            vec![map(0, 1000, 1)],
        )));
        assert!(m.contains("length 0"), "{m}");
        // CONTAINER, TARGET and unknown modes.
        for (mode, name) in [
            (NamespaceMode::Container as i32, "CONTAINER"),
            (NamespaceMode::Target as i32, "TARGET"),
            (9, "9 (unknown)"),
        ] {
            let o = cri::NamespaceOption {
                userns_options: Some(cri::UserNamespace {
                    mode,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let m = err(pod_userns(&o));
            assert!(m.contains(&format!("mode {name} is not supported")), "{m}");
        }
        // Host network/PID/IPC with a user namespace.
        for f in [
            |o: &mut cri::NamespaceOption| o.network = NamespaceMode::Node as i32,
            |o: &mut cri::NamespaceOption| o.pid = NamespaceMode::Node as i32,
            |o: &mut cri::NamespaceOption| o.ipc = NamespaceMode::Node as i32,
        ] {
            let mut o = pod(vec![map(0, 1000, 10)], vec![map(0, 1000, 10)]);
            f(&mut o);
            let m = err(pod_userns(&o));
            assert!(m.contains("cannot use the node's"), "{m}");
        }
    }

    #[test]
    fn a_container_follows_or_matches_its_pod() {
        let o = pod(vec![map(0, 1000, 100000)], vec![map(0, 1000, 100000)]);
        let ns = pod_userns(&o).unwrap().unwrap();
        // Same options (what the kubelet sends), or none at all.
        assert!(check_container(Some(&o), Some(&ns)).is_ok());
        assert!(check_container(None, Some(&ns)).is_ok());
        assert!(check_container(Some(&cri::NamespaceOption::default()), Some(&ns)).is_ok());
        // Other modes of the container do not matter here.
        let mut pid_container = o.clone();
        pid_container.pid = NamespaceMode::Container as i32;
        assert!(check_container(Some(&pid_container), Some(&ns)).is_ok());
        // Other mappings, NODE in a POD pod, POD in a NODE pod.
        let other = pod(vec![map(0, 5000, 100000)], vec![map(0, 1000, 100000)]);
        let e = check_container(Some(&other), Some(&ns))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"0 5000 100000\"") && e.contains("shares its pod's"),
            "{e}"
        );
        let node = cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = check_container(Some(&node), Some(&ns))
            .unwrap_err()
            .to_string();
        assert!(e.contains("asks for user namespace NODE"), "{e}");
        assert!(check_container(Some(&node), None).is_ok());
        let e = check_container(Some(&o), None).unwrap_err().to_string();
        assert!(e.contains("sandbox has NODE"), "{e}");
        // Malformed container options are refused as such.
        let bad = cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: NamespaceMode::Target as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = check_container(Some(&bad), None).unwrap_err().to_string();
        assert!(e.contains("TARGET is not supported"), "{e}");
    }

    #[test]
    fn status_view() {
        assert_eq!(to_cri(None).mode, NamespaceMode::Node as i32);
        let ns = UserNamespace {
            uids: vec![IdMap {
                container_id: 0,
                host_id: 7,
                length: 9,
            }],
            gids: vec![],
        };
        let c = to_cri(Some(&ns));
        assert_eq!(c.mode, NamespaceMode::Pod as i32);
        assert_eq!(c.uids, vec![map(0, 7, 9)]);
    }
}
