//! The container's Linux namespaces: the pod's user (if it has one),
//! network, IPC and UTS namespaces joined by path, PID per the container's
//! NamespaceMode, a fresh mount namespace, and a cgroup namespace on cgroup v2.
//!
//! Mirrors containerd's `customopts.WithPodNamespaces` (CRI plugin 1.6/1.7) and
//! its default namespace list (`oci.defaultUnixNamespaces`: pid, ipc, uts, mount,
//! network); the cgroup namespace as in `containerSpec` ("cgroupns is not used
//! when running in cgroup v1 mode or in privileged"). A namespace shared with the
//! node is simply left out, so the container stays in the host's one.

use super::{SandboxFacts, SpecError};
use crid_common::protocol::IdMap;
use crid_proto::cri::{LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
};
use std::path::{Path, PathBuf};

/// The namespace list, in containerd's order.
pub fn namespaces(
    sc: &LinuxContainerSecurityContext,
    sandbox: &SandboxFacts,
    cgroup_v2: bool,
    target_pid_ns_path: Option<&Path>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let opts = sc.namespace_options.clone().unwrap_or_default();
    let mut out = Vec::new();

    // User: the pod's, which owns the pod's other namespaces (the node's
    // when the pod has none).
    if let Some(u) = &sandbox.userns {
        out.push(ns(LinuxNamespaceType::User, Some(u.path.clone())));
    }

    // PID: per the container's own mode (the kubelet sets it on every container).
    match NamespaceMode::try_from(opts.pid).unwrap_or(NamespaceMode::Pod) {
        NamespaceMode::Pod => {
            if !sandbox.host_pid {
                let path = required(&sandbox.pid_ns_path, "PID", "shared PID namespace")?;
                out.push(ns(LinuxNamespaceType::Pid, Some(path)));
            }
        }
        NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Node => {
            if !sandbox.host_pid {
                return Err(SpecError::FailedPrecondition(
                    "the container asks for the node's PID namespace but its pod does not use it"
                        .into(),
                ));
            }
        }
        NamespaceMode::Target => {
            let path = target_pid_ns_path.ok_or_else(|| {
                SpecError::InvalidArgument(format!(
                    "PID namespace mode TARGET needs the PID namespace of target container {:?}",
                    opts.target_id
                ))
            })?;
            out.push(ns(LinuxNamespaceType::Pid, Some(path.to_path_buf())));
        }
    }

    // IPC and UTS and network: always the pod's (there is no CONTAINER mode for
    // them in Kubernetes), which may be the node's.
    if !sandbox.host_ipc {
        let path = required(&sandbox.ipc_ns_path, "IPC", "IPC namespace")?;
        out.push(ns(LinuxNamespaceType::Ipc, Some(path)));
    }
    if !sandbox.host_network {
        let path = required(&sandbox.uts_ns_path, "UTS", "UTS namespace")?;
        out.push(ns(LinuxNamespaceType::Uts, Some(path)));
    }
    out.push(ns(LinuxNamespaceType::Mount, None));
    if !sandbox.host_network {
        let path = required(&sandbox.netns_path, "network", "network namespace")?;
        out.push(ns(LinuxNamespaceType::Network, Some(path)));
    }
    if cgroup_v2 && !sc.privileged {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// CRI-checked id mappings in the spec's form.
pub fn id_mappings(maps: &[IdMap]) -> Vec<LinuxIdMapping> {
    maps.iter()
        .map(|m| {
            // Every field has a default, so the builder cannot fail.
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
                .unwrap_or_default()
        })
        .collect()
}

fn required(path: &Option<PathBuf>, kind: &str, what: &str) -> Result<PathBuf, SpecError> {
    path.clone().ok_or_else(|| {
        SpecError::FailedPrecondition(format!(
            "the pod sandbox has no {what} to give the container as its {kind} namespace"
        ))
    })
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::cri::NamespaceOption;

    fn pod() -> SandboxFacts {
        SandboxFacts {
            netns_path: Some("/run/crid/netns/p1".into()),
            ipc_ns_path: Some("/proc/10/ns/ipc".into()),
            uts_ns_path: Some("/proc/10/ns/uts".into()),
            pid_ns_path: Some("/proc/11/ns/pid".into()),
            ..Default::default()
        }
    }

    fn sc(pid: NamespaceMode) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: pid as i32,
                target_id: "c0".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// (type, path) pairs for compact assertions.
    fn pairs(v: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        v.iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    fn s(p: &str) -> Option<String> {
        Some(p.to_string())
    }

    #[test]
    fn pod_mode_joins_all_pod_namespaces() {
        let got = namespaces(&sc(NamespaceMode::Pod), &pod(), false, None).unwrap();
        use LinuxNamespaceType::*;
        assert_eq!(
            pairs(&got),
            vec![
                (Pid, s("/proc/11/ns/pid")),
                (Ipc, s("/proc/10/ns/ipc")),
                (Uts, s("/proc/10/ns/uts")),
                (Mount, None),
                (Network, s("/run/crid/netns/p1")),
            ]
        );
    }

    #[test]
    fn container_mode_gets_a_new_pid_namespace() {
        let got = namespaces(&sc(NamespaceMode::Container), &pod(), false, None).unwrap();
        assert_eq!(pairs(&got)[0], (LinuxNamespaceType::Pid, None));
        // The pod's shared PID namespace is not needed for CONTAINER.
        let mut p = pod();
        p.pid_ns_path = None;
        assert!(namespaces(&sc(NamespaceMode::Container), &p, false, None).is_ok());
    }

    #[test]
    fn pod_mode_without_shared_pid_namespace_fails() {
        let mut p = pod();
        p.pid_ns_path = None;
        let err = namespaces(&sc(NamespaceMode::Pod), &p, false, None).unwrap_err();
        assert!(matches!(err, SpecError::FailedPrecondition(m) if m.contains("PID")));
    }

    #[test]
    fn node_mode_uses_the_host_pid_namespace() {
        let mut p = pod();
        p.host_pid = true;
        let got = namespaces(&sc(NamespaceMode::Node), &p, false, None).unwrap();
        assert!(got.iter().all(|n| n.typ() != LinuxNamespaceType::Pid));
        // ... but only in a host-PID pod.
        assert!(matches!(
            namespaces(&sc(NamespaceMode::Node), &pod(), false, None),
            Err(SpecError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn target_mode_joins_the_target() {
        let got = namespaces(
            &sc(NamespaceMode::Target),
            &pod(),
            false,
            Some(Path::new("/proc/77/ns/pid")),
        )
        .unwrap();
        assert_eq!(
            pairs(&got)[0],
            (LinuxNamespaceType::Pid, s("/proc/77/ns/pid"))
        );
        let err = namespaces(&sc(NamespaceMode::Target), &pod(), false, None).unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(m) if m.contains("c0")));
    }

    #[test]
    fn host_network_and_ipc_leave_namespaces_out() {
        let mut p = pod();
        p.host_network = true;
        p.host_ipc = true;
        p.netns_path = None;
        p.uts_ns_path = None;
        p.ipc_ns_path = None;
        let got = namespaces(&sc(NamespaceMode::Container), &p, false, None).unwrap();
        use LinuxNamespaceType::*;
        assert_eq!(pairs(&got), vec![(Pid, None), (Mount, None)]);
    }

    #[test]
    fn missing_pod_namespaces_fail() {
        for f in [
            |p: &mut SandboxFacts| p.netns_path = None,
            |p: &mut SandboxFacts| p.ipc_ns_path = None,
            |p: &mut SandboxFacts| p.uts_ns_path = None,
        ] {
            let mut p = pod();
            f(&mut p);
            assert!(matches!(
                namespaces(&sc(NamespaceMode::Container), &p, false, None),
                Err(SpecError::FailedPrecondition(_))
            ));
        }
    }

    #[test]
    fn cgroup_namespace_on_v2_unless_privileged() {
        let got = namespaces(&sc(NamespaceMode::Pod), &pod(), true, None).unwrap();
        assert_eq!(
            got.last().map(|n| n.typ()),
            Some(LinuxNamespaceType::Cgroup)
        );
        let mut priv_sc = sc(NamespaceMode::Pod);
        priv_sc.privileged = true;
        let got = namespaces(&priv_sc, &pod(), true, None).unwrap();
        assert!(got.iter().all(|n| n.typ() != LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn a_pod_user_namespace_is_joined_first() {
        let mut p = pod();
        let m = IdMap {
            container_id: 0,
            host_id: 1000,
            length: 100000,
        };
        p.userns = Some(crate::spec::PodUserns {
            path: "/run/crid/sandboxes/p1/ns/user".into(),
            ns: crid_common::protocol::UserNamespace {
                uids: vec![m],
                gids: vec![m],
            },
        });
        let got = namespaces(&sc(NamespaceMode::Pod), &p, false, None).unwrap();
        use LinuxNamespaceType::*;
        assert_eq!(
            pairs(&got),
            vec![
                (User, s("/run/crid/sandboxes/p1/ns/user")),
                (Pid, s("/proc/11/ns/pid")),
                (Ipc, s("/proc/10/ns/ipc")),
                (Uts, s("/proc/10/ns/uts")),
                (Mount, None),
                (Network, s("/run/crid/netns/p1")),
            ]
        );
        let maps = id_mappings(&[m]);
        assert_eq!(
            (maps[0].container_id(), maps[0].host_id(), maps[0].size()),
            (0, 1000, 100000)
        );
        // Without one, no user namespace entry (the node's).
        let got = namespaces(&sc(NamespaceMode::Pod), &pod(), false, None).unwrap();
        assert!(got.iter().all(|n| n.typ() != User));
    }

    #[test]
    fn absent_namespace_options_mean_pod() {
        let got = namespaces(
            &LinuxContainerSecurityContext::default(),
            &pod(),
            false,
            None,
        )
        .unwrap();
        assert_eq!(
            pairs(&got)[0],
            (LinuxNamespaceType::Pid, s("/proc/11/ns/pid"))
        );
    }
}
