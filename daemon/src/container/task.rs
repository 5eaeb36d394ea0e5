//! crid's containerd calls for a container's task (its main process): create
//! with the snapshot's mounts and the helper's FIFOs as stdio, start, kill,
//! wait, delete, get.
//!
//! Kill, Wait and Delete treat a task that has exited as done, whoever
//! noticed first. A call can fail *because* the task ended: containerd 1.6
//! closes its ttrpc connection of a task as it deletes the task (crid's exit
//! handler does that on the TaskExit event), and a Kill or Wait in flight on
//! that connection fails with "ttrpc: closed" (code Unknown), as does one to
//! a shim that went away; a call that arrives after the deletion gets
//! NotFound. So a failed call asks containerd for the task's state before
//! it counts as a failure (the order of events is described in
//! `cri/container_lifecycle.rs`).

use crate::error::{Error, Result};
use crate::image::session::{cerr, Session};
use crid_proto::containerd::services::v1::snapshots::snapshots_client::SnapshotsClient;
use crid_proto::containerd::services::v1::snapshots::MountsRequest;
use crid_proto::containerd::services::v1::tasks_client::TasksClient;
use crid_proto::containerd::services::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
};
use crid_proto::containerd::types::v1::Status as TaskStatus;
use crid_proto::containerd::types::Mount;

/// How a task ended, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskExit {
    /// The exit status (128 + signal for a killed process).
    pub exit_status: u32,
    /// When it exited, ns since the epoch (0 when containerd does not know).
    pub exited_at: i64,
}

/// What containerd knows of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// No task (never created, or deleted).
    Absent,
    /// Created or running (paused counts as running for the CRI).
    Alive {
        /// The main process's pid.
        pid: u32,
    },
    /// Exited, not yet deleted.
    Stopped(TaskExit),
}

/// The FIFO paths a task gets as stdio ("" = none).
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    /// stdin FIFO.
    pub stdin: String,
    /// stdout FIFO.
    pub stdout: String,
    /// stderr FIFO.
    pub stderr: String,
    /// Whether the process gets a terminal (stdout only).
    pub terminal: bool,
}

/// Nanoseconds since the epoch of a protobuf timestamp.
pub fn timestamp_ns(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos))
        .filter(|ns| *ns > 0)
        .unwrap_or(0)
}

fn task_exit(exit_status: u32, exited_at: Option<&prost_types::Timestamp>) -> TaskExit {
    TaskExit {
        exit_status,
        exited_at: timestamp_ns(exited_at),
    }
}

/// The mounts of a container's writable snapshot.
pub async fn snapshot_mounts(
    s: &Session,
    snapshotter: &str,
    snapshot_key: &str,
) -> Result<Vec<Mount>> {
    Ok(SnapshotsClient::new(s.ctrd.channel())
        .mounts(s.req(MountsRequest {
            snapshotter: snapshotter.to_string(),
            key: snapshot_key.to_string(),
        }))
        .await
        .map_err(cerr("snapshots.mounts"))?
        .into_inner()
        .mounts)
}

/// Creates the task: `rootfs` (the writable snapshot's mounts) is mounted
/// by the shim at the bundle's `rootfs`, where the spec's root points; an
/// empty `rootfs` leaves the spec's (absolute) root as it is. Returns the
/// pid of the created (not yet started) process.
pub async fn create(s: &Session, id: &str, rootfs: Vec<Mount>, io: &TaskIo) -> Result<u32> {
    let r = TasksClient::new(s.ctrd.channel())
        .create(s.req(CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            ..Default::default()
        }))
        .await
        .map_err(cerr("tasks.create"))?;
    Ok(r.into_inner().pid)
}

/// Starts the created task; returns its pid.
pub async fn start(s: &Session, id: &str) -> Result<u32> {
    let r = TasksClient::new(s.ctrd.channel())
        .start(s.req(StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map_err(cerr("tasks.start"))?;
    Ok(r.into_inner().pid)
}

/// After a failed call on task `id`: the task's exit if it has exited
/// (`Some` while containerd still holds the stopped task, `None` once it is
/// gone); `err` if it still runs or its state cannot be read.
async fn exited_anyway(s: &Session, id: &str, err: Error) -> Result<Option<TaskExit>> {
    let exited = match state(s, id).await {
        Ok(TaskState::Stopped(x)) => Some(x),
        Ok(TaskState::Absent) => None,
        Ok(TaskState::Alive { .. }) | Err(_) => return Err(err),
    };
    tracing::debug!(container = %id, error = %err, ?exited, "call failed on a task that has ended");
    Ok(exited)
}

/// Sends `signal` to the task's main process (`all`: every process of the
/// container). A task that is gone or has exited is fine (nothing to kill).
pub async fn kill(s: &Session, id: &str, signal: u32, all: bool) -> Result<()> {
    let r = TasksClient::new(s.ctrd.channel())
        .kill(s.req(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all,
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        // NotFound: no task, or the shim's "process already finished".
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => exited_anyway(s, id, cerr("tasks.kill")(st))
            .await
            .map(|_| ()),
    }
}

/// Waits until the task's main process has exited; its exit, or `None`
/// when the task is gone (deleted meanwhile, or never there). A Wait cut
/// short by the task's deletion or its shim's end counts as the exit.
pub async fn wait(s: &Session, id: &str) -> Result<Option<TaskExit>> {
    let r = TasksClient::new(s.ctrd.channel())
        .wait(s.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            Ok(Some(task_exit(r.exit_status, r.exited_at.as_ref())))
        }
        Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
        Err(st) => exited_anyway(s, id, cerr("tasks.wait")(st)).await,
    }
}

/// Deletes the (exited) task and returns how it ended; `None` if there was
/// no task (or it went while the call failed: a shim gone mid-delete).
/// Deleting the pod's last task lets the shared shim exit.
pub async fn delete(s: &Session, id: &str) -> Result<Option<TaskExit>> {
    let r = TasksClient::new(s.ctrd.channel())
        .delete(s.req(DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            Ok(Some(task_exit(r.exit_status, r.exited_at.as_ref())))
        }
        Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
        Err(st) => {
            let err = cerr("tasks.delete")(st);
            match state(s, id).await {
                Ok(TaskState::Absent) => Ok(None),
                _ => Err(err),
            }
        }
    }
}

/// The task's state in containerd.
pub async fn state(s: &Session, id: &str) -> Result<TaskState> {
    let r = TasksClient::new(s.ctrd.channel())
        .get(s.req(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await;
    let p = match r {
        Ok(r) => r.into_inner().process,
        Err(st) if st.code() == tonic::Code::NotFound => return Ok(TaskState::Absent),
        Err(st) => return Err(cerr("tasks.get")(st)),
    };
    let Some(p) = p else {
        return Ok(TaskState::Absent);
    };
    Ok(
        match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
            TaskStatus::Stopped => TaskState::Stopped(TaskExit {
                exit_status: p.exit_status,
                exited_at: timestamp_ns(p.exited_at.as_ref()),
            }),
            TaskStatus::Unknown => {
                return Err(Error::Internal(format!(
                    "containerd reports task {id} in an unknown state"
                )))
            }
            _ => TaskState::Alive { pid: p.pid },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_to_ns_and_zero_stays_zero() {
        let t = prost_types::Timestamp {
            seconds: 2,
            nanos: 5,
        };
        assert_eq!(timestamp_ns(Some(&t)), 2_000_000_005);
        assert_eq!(timestamp_ns(None), 0);
        // containerd sends the zero time (year 1) for "not exited".
        let zero = prost_types::Timestamp {
            seconds: -62135596800,
            nanos: 0,
        };
        assert_eq!(timestamp_ns(Some(&zero)), 0);
    }
}
