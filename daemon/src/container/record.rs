//! The persisted container record and its state machine.
//!
//! ```text
//!   (name reserved) ──CreateContainer done──▶ Created ──StartContainer──▶ Running
//!         │                                      │                          │
//!         │ any step failed: everything          │ Stop/Remove              │ task exited /
//!         ▼ undone, nothing persisted            ▼ (never started)          ▼ killed
//!      (gone)                                  Exited ◀──────────────────── Exited
//!                                                │
//!                                     RemoveContainer ─▶ (record deleted)
//! ```
//! A record is written only once the containerd container exists, so a
//! record always names a snapshot and a containerd container that
//! RemoveContainer must delete (both deletions are idempotent).
//!
//! Every transition happens under the container's op lock and is written
//! through `Containers::update` (the store's one atomic write). `Running →
//! Exited` happens once, in the exit handler (`cri::container_lifecycle::
//! handle_exit`), whichever noticed the end first: the `/tasks/exit`
//! event, StopContainer's Wait (answered, or cut short by the task's
//! deletion or its shim's end), StopPodSandbox/RemoveContainer killing it,
//! or reconciliation finding the task stopped or gone. It records the
//! exit status Tasks.Delete reports (the shim's own record), else the one
//! the event or Wait carried, else 255 `Unknown` (the task vanished with
//! its shim); later callers find `Exited` and change nothing, except that
//! an OOM event may still turn the reason into `OOMKilled`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Record format version written by this build.
pub const RECORD_VERSION: u32 = 1;

/// Where a container is in its life (CRI `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created in containerd, no task yet.
    Created,
    /// Its task was started.
    Running,
    /// Its task exited (or it was stopped before it ever ran).
    Exited,
}

impl ContainerState {
    /// The CRI enum value.
    pub fn cri(self) -> crid_proto::cri::ContainerState {
        use crid_proto::cri::ContainerState as C;
        match self {
            ContainerState::Created => C::ContainerCreated,
            ContainerState::Running => C::ContainerRunning,
            ContainerState::Exited => C::ContainerExited,
        }
    }
}

/// One CRI mount as the container got it (for ContainerStatus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only bind.
    pub readonly: bool,
    /// SELinux relabel asked for (ignored by crid).
    pub selinux_relabel: bool,
    /// CRI `MountPropagation` value.
    pub propagation: i32,
    /// Set for an image volume (`host_path` is then crid's mount of it).
    #[serde(default)]
    pub image: Option<ImageVolumeRecord>,
}

/// What an image volume was made from (ContainerStatus reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolumeRecord {
    /// The image as the kubelet named it.
    pub image: String,
    /// Its id (config digest), reported as the mount's `image_ref`.
    pub image_id: String,
    /// `image_sub_path` as asked.
    pub sub_path: String,
}

/// One container, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id (also the containerd container id and snapshot key).
    pub id: String,
    /// The pod sandbox it belongs to.
    pub sandbox_id: String,
    /// Metadata name.
    pub name: String,
    /// Metadata attempt.
    pub attempt: u32,
    /// Current state.
    pub state: ContainerState,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Start time (0 = never started).
    pub started_at: i64,
    /// Exit time (0 = not exited).
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled` once exited.
    pub reason: String,
    /// Human-readable detail of the exit.
    pub message: String,
    /// The image as the kubelet named it.
    pub image: String,
    /// The image id (config digest).
    pub image_id: String,
    /// The image reference reported as `image_ref` (repo digest, else id).
    pub image_ref: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The CRI mounts.
    pub mounts: Vec<MountRecord>,
    /// The log file (sandbox log_directory + log_path), if any.
    pub log_path: Option<PathBuf>,
    /// Snapshotter holding the writable layer.
    pub snapshotter: String,
    /// Snapshot key of the writable layer.
    pub snapshot_key: String,
    /// Whether stdin / stdin_once / tty were asked for.
    pub stdin: bool,
    /// See `stdin`.
    pub stdin_once: bool,
    /// See `stdin`.
    pub tty: bool,
    /// The OCI runtime spec handed to containerd (ContainerStatus verbose info).
    pub spec: serde_json::Value,
    /// The stop signal: the CRI config's `stop_signal`, else the image's
    /// StopSignal (None: SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// The task's main pid while it runs (verbose info, PID TARGET).
    #[serde(default)]
    pub pid: Option<u32>,
    /// containerd reported an OOM kill in the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
    /// The CreateContainer config as the kubelet sent it (verbose
    /// ContainerStatus `info.config`, as containerd reports it); None in
    /// records written before it was kept.
    #[serde(default)]
    pub config: Option<crid_proto::cri::ContainerConfig>,
}

#[cfg(test)]
impl ContainerRecord {
    /// A Created record of container `id` in pod `sandbox_id` for unit tests.
    pub fn sample(id: &str, sandbox_id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: sandbox_id.into(),
            name: "n".into(),
            attempt: 0,
            state: ContainerState::Created,
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: "busybox".into(),
            image_id: "sha256:aa".into(),
            image_ref: "sha256:aa".into(),
            labels: Default::default(),
            annotations: Default::default(),
            mounts: vec![],
            log_path: None,
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            stdin: false,
            stdin_once: false,
            tty: false,
            spec: serde_json::json!({}),
            stop_signal: None,
            pid: None,
            oom_killed: false,
            config: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_serialises_as_snake_case_and_maps_to_cri() {
        assert_eq!(
            serde_json::to_value(ContainerState::Created).unwrap(),
            serde_json::json!("created")
        );
        assert_eq!(
            ContainerState::Exited.cri(),
            crid_proto::cri::ContainerState::ContainerExited
        );
        assert_eq!(
            ContainerState::Running.cri(),
            crid_proto::cri::ContainerState::ContainerRunning
        );
    }
}
