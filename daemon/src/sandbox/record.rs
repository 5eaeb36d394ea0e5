//! The persisted sandbox record and its state machine.
//!
//! ```text
//!   Creating ──set-up done──▶ Ready ──Stop / helper lost for good──▶ NotReady(reason)
//!      │                        ▲  │                                    │
//!      │ crid restarted         │  └─ helper died: restarted, re-adopts ┘ Stop again
//!      ▼ mid-creation           │     the pins (stays Ready)              (idempotent)
//!   NotReady("...")             │                                       Remove ─▶ (record deleted)
//! ```
//! `torn_down` says whether every resource (helper, CNI, pins incl. the user
//! namespace's, /dev/shm,
//! cgroups) is released; a half-failed teardown leaves it false and the
//! reason in the state, so a later Stop/Remove retries.

use super::validate::MODE_NODE;
use crate::cgroups::Placement;
use crid_common::cni_exec::CniInvocation;
use crid_common::protocol::{
    Adopt, HelperSpec, OwnNamespaces, ShimSpec, UserNamespace, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Record format version written by this build.
pub const RECORD_VERSION: u32 = 1;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum SandboxState {
    /// RunPodSandbox is working on it.
    Creating,
    /// The helper holds the namespaces and the network is set up.
    Ready,
    /// Stopped, or broken; the reason says which.
    NotReady(String),
}

/// Namespace modes as the kubelet sent them (CRI `NamespaceMode` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceModes {
    /// Network.
    pub network: i32,
    /// PID.
    pub pid: i32,
    /// IPC.
    pub ipc: i32,
}

/// One sandbox, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub id: String,
    /// Metadata name.
    pub name: String,
    /// Metadata namespace.
    pub namespace: String,
    /// Metadata uid.
    pub uid: String,
    /// Metadata attempt.
    pub attempt: u32,
    /// Current state.
    #[serde(flatten)]
    pub state: SandboxState,
    /// Whether everything is released.
    pub torn_down: bool,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler.
    pub runtime_handler: String,
    /// Hostname.
    pub hostname: String,
    /// Log directory.
    pub log_directory: String,
    /// Namespace modes.
    pub namespace_modes: NamespaceModes,
    /// The cgroup parent asked for ("" = crid's own).
    pub cgroup_parent: String,
    /// Helper cgroup placement.
    pub cgroups: Placement,
    /// `<runtime_dir>/sandboxes/<id>`.
    pub dir: PathBuf,
    /// Whether /dev/shm (dir/shm) is a mounted tmpfs of ours.
    pub shm_mounted: bool,
    /// The CNI invocation, kept for DEL.
    pub cni: Option<CniInvocation>,
    /// The CNI result, DEL's prevResult.
    pub cni_result: Option<serde_json::Value>,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// The helper's pid.
    pub helper_pid: Option<u32>,
    /// The PID-namespace init's pid.
    pub reaper_pid: Option<u32>,
    /// Pod-level resources as the kubelet last told them (RunPodSandbox's
    /// `linux.overhead`/`resources`, then UpdatePodSandboxResources).
    #[serde(default)]
    pub pod_resources: PodResources,
    /// The pod's own user namespace (mode POD; pinned at `ns/user`), which
    /// owns its other namespaces; None: the node's.
    #[serde(default)]
    pub user_namespace: Option<UserNamespace>,
    /// The helper is the pod's containerd shim (handler of type
    /// `io.containerd.crid.v1`): where it serves and reports to.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
    /// The RunPodSandbox config as the kubelet sent it (verbose
    /// PodSandboxStatus `info.config`, as containerd reports it); None in
    /// records written before it was kept.
    #[serde(default)]
    pub config: Option<crid_proto::cri::PodSandboxConfig>,
    /// With the systemd cgroup driver: the pod's slice and helper scope
    /// (`cgroups` is then empty: systemd owns those cgroups).
    #[serde(default)]
    pub systemd: Option<crate::systemd_cgroups::PodUnits>,
}

/// Pod-level resources (the kubelet applies them to the pod cgroup itself).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodResources {
    /// The pod's overhead.
    pub overhead: Option<crid_proto::cri::LinuxContainerResources>,
    /// The sum of its containers' resources.
    pub resources: Option<crid_proto::cri::LinuxContainerResources>,
}

/// Where the helper of sandbox `id` (dir `dir`) serves as a shim: in the
/// sandbox dir when the path fits a unix socket address (108 bytes), else
/// under `/run/crid-shim` by sandbox id.
pub fn shim_socket(dir: &std::path::Path, id: &str) -> PathBuf {
    let inside = dir.join("shim.sock");
    if inside.as_os_str().len() < 100 {
        inside
    } else {
        PathBuf::from("/run/crid-shim").join(format!("{id}.sock"))
    }
}

impl SandboxRecord {
    /// Dir of the namespace pins.
    pub fn ns_dir(&self) -> PathBuf {
        self.dir.join("ns")
    }
    /// The helper's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("helper.sock")
    }
    /// Whether the record says Ready.
    pub fn is_ready(&self) -> bool {
        self.state == SandboxState::Ready
    }
    /// The namespaces the pod has of its own (NODE means the host's).
    pub fn own_namespaces(&self) -> OwnNamespaces {
        OwnNamespaces {
            net: self.namespace_modes.network != MODE_NODE,
            ipc: self.namespace_modes.ipc != MODE_NODE,
            // POD (0) shares one PID namespace; CONTAINER (1) gives each
            // container its own, made by runc later.
            pid: self.namespace_modes.pid == 0,
        }
    }
    /// What a helper for this sandbox is started with: a fresh set-up
    /// (`sysctls`, `cni`) or, with `adopt`, a re-adoption of the pins.
    pub fn helper_spec(
        &self,
        sysctls: BTreeMap<String, String>,
        adopt: Option<Adopt>,
    ) -> HelperSpec {
        HelperSpec {
            version: PROTOCOL_VERSION,
            sandbox_id: self.id.clone(),
            cgroup_procs: self.cgroups.leaves.clone(),
            namespaces: self.own_namespaces(),
            ns_dir: self.ns_dir(),
            socket: self.socket(),
            hostname: self.hostname.clone(),
            sysctls,
            cni: if adopt.is_some() {
                None
            } else {
                self.cni.clone()
            },
            adopt,
            userns: self.user_namespace.clone(),
            shim: self.shim.clone(),
        }
    }
    /// The namespace pins the pod has: (kind, whether it must exist).
    pub fn pins(&self) -> [(&'static str, bool); 4] {
        let own = self.own_namespaces();
        [
            ("net", own.net),
            ("uts", own.net),
            ("ipc", own.ipc),
            ("user", self.user_namespace.is_some()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_with_their_reason() {
        let v = serde_json::to_value(SandboxState::NotReady("stopped".into())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "not_ready", "reason": "stopped"})
        );
        let v = serde_json::to_value(SandboxState::Ready).unwrap();
        assert_eq!(v, serde_json::json!({"state": "ready"}));
        let back: SandboxState =
            serde_json::from_value(serde_json::json!({"state": "creating"})).unwrap();
        assert_eq!(back, SandboxState::Creating);
    }
}
