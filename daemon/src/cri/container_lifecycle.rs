//! StartContainer, StopContainer, ReopenContainerLog and the container exit
//! path: containerd's task event stream (exit, OOM), reconciliation with
//! containerd's task state when the stream (re)starts, and the stop hook of
//! StopPodSandbox.
//!
//! Every state change of a container goes through its op lock
//! ([`crate::container::Containers::op_lock`]): StartContainer holds it
//! from the FIFOs to `Running`, so an exit that races the start is handled
//! after it; exit handling is idempotent (the first caller deletes the task
//! and records the exit, later ones find the record `Exited`). The states
//! themselves are in `container/record.rs`.
//!
//! # Who notices an exit first
//!
//! containerd 1.6.20, runc v2 shim, one shim per pod (the spec's sandbox-id
//! annotation). Observed with crid's debug log and containerd's log for a
//! pod whose only container is busybox `top` (it dies of SIGTERM), stopped
//! with StopContainer(timeout 60 s), four pods at a time:
//!
//! 1. crid's Tasks.Kill(SIGTERM) returns. The process is usually dead
//!    already: its exit time precedes Kill's answer by ~0.5 ms.
//! 2. The shim's reaper marks the process exited (which answers every Wait
//!    the shim holds for it) and publishes `/tasks/exit`; crid's event
//!    stream delivers it 0.5-3 ms after Kill's answer (once even before
//!    it), typically *before* crid's own Tasks.Wait, issued right after
//!    Kill, has answered.
//! 3. The exit handler ([`handle_exit`]) takes the op lock and calls
//!    Tasks.Delete. containerd has the shim delete the task (`runc delete`),
//!    drops the task from its list, asks the shim to shut down (it exits if
//!    that was the pod's last task), then closes its own ttrpc connection
//!    for that task: containerd logs "shim disconnected" for *every*
//!    deleted task, not only for a dead shim.
//! 4. A Wait or Kill still in flight on that connection fails with "ttrpc:
//!    closed" (code Unknown): seen 11-19 ms after the Wait was issued, in 8
//!    of 600 pods with containerd logging at debug level, 1 of 200 at info
//!    level; this is issue 18. It needs no shim exit: it happened in pods
//!    whose second container kept the shim. A call that arrives after the
//!    task left containerd's list gets NotFound instead.
//! 5. Delete answers with the exit status the shim recorded; the record
//!    becomes `Exited` and the op lock is released.
//!
//! If the shim itself dies while containerd still lists the task,
//! containerd drops the task and publishes a `/tasks/exit` of its own
//! (status 137 from the shim binary's cleanup, or 255).
//!
//! So: the event, the Wait and a vanished shim are all just "the task has
//! ended". [`task`] turns a failed Kill/Wait/Delete into success when the
//! task has exited or is gone; every path then ends in [`handle_exit`],
//! which records the exit once, with the status from Tasks.Delete (else
//! from the event or Wait that reported it, else 255 `Unknown`). A Stop
//! whose Wait was cut short this way waits there for the concurrent exit
//! handler's op lock and finds the record `Exited`.

use super::Crid;
use crate::container::exit;
use crate::container::record::{ContainerRecord, ContainerState};
use crate::container::task::{self, TaskExit, TaskIo, TaskState};
use crate::error::{Error, Result};
use crate::helper_client;
use crate::image::session::Session;
use crid_common::protocol::ContainerIoSpec;
use crid_proto::containerd::events::{TaskExit as TaskExitEvent, TaskOom};
use crid_proto::containerd::services::v1::events_client::EventsClient;
use crid_proto::containerd::services::v1::SubscribeRequest;
use crid_proto::cri;
use crid_proto::cri::ContainerEventType;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

/// How long crid waits for the pod helper's answer about container stdio.
const HELPER_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the background reconciliation with containerd's tasks.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How long StopContainer waits for the task to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(30);

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn get(crid: &Crid, id: &str) -> Result<ContainerRecord> {
    let rec = crid
        .containers
        .get(id)?
        .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
    tracing::Span::current().record("container", rec.id.as_str());
    tracing::Span::current().record("pod", rec.sandbox_id.as_str());
    Ok(rec)
}

/// Runs a blocking helper call off the async threads.
async fn helper_call<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, String> + Send + 'static,
) -> std::result::Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("helper call task failed: {e}"))?
}

/// `StartContainer`. Runs as its own task so a cancelled RPC cannot leave a
/// half-started container: it completes or undoes itself.
pub async fn start(
    crid: Arc<Crid>,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse> {
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move { start_inner(&crid, &req.container_id).await },
        span,
    ))
    .await
    .map_err(|e| Error::Internal(format!("StartContainer task failed: {e}")))??;
    Ok(cri::StartContainerResponse {})
}

async fn start_inner(crid: &Crid, id: &str) -> Result<()> {
    let rec = get(crid, id)?;
    // Pod first, then container: the same order as teardown (pod lock
    // exclusive, then each container's op lock).
    let _pod = crid.pod_locks.shared(&rec.sandbox_id).await;
    let lock = crid.containers.op_lock(&rec.id);
    let _held = lock.lock().await;
    // Re-read under the lock: a concurrent Start or Remove may have won.
    let rec = get(crid, &rec.id)?;
    if rec.state != ContainerState::Created {
        return Err(Error::FailedPrecondition(format!(
            "container {} is {:?}, not created: it can be started once",
            rec.id, rec.state
        )));
    }
    let sb = super::container::sandbox_of(crid, &rec.sandbox_id).await?;
    if !sb.is_ready() {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sb.id
        )));
    }

    // The helper makes the FIFOs and drains them into the log (or, without
    // a log path, into /dev/null: stdio must never block the container).
    let spec = ContainerIoSpec {
        container_id: rec.id.clone(),
        log_path: rec.log_path.clone().unwrap_or_else(|| "/dev/null".into()),
        tty: rec.tty,
        stdin: rec.stdin,
        stdin_once: rec.stdin_once,
        max_line_bytes: None,
    };
    let socket = sb.socket();
    let paths =
        helper_call(move || helper_client::prepare_container_io(&socket, &spec, HELPER_IO_TIMEOUT))
            .await
            .map_err(|e| Error::Internal(format!("pod helper could not set up stdio: {e}")))?;
    let io = TaskIo {
        stdin: paths
            .stdin
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        stdout: paths.stdout.display().to_string(),
        stderr: paths
            .stderr
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        terminal: rec.tty,
    };

    crate::nri::notify_container(crid, crid_proto::nri::Event::StartContainer, &rec).await;
    let s = Session::plain(&crid.containerd);
    let started = async {
        let mut mounts = task::snapshot_mounts(&s, &rec.snapshotter, &rec.snapshot_key).await?;
        if sb.user_namespace.is_some() {
            // crid mounts the idmapped rootfs where the spec's root points;
            // the shim gets nothing to mount.
            mount_idmapped_rootfs(crid, &sb, &rec.id, std::mem::take(&mut mounts)).await?;
        }
        task::create(&s, &rec.id, mounts, &io).await?;
        task::start(&s, &rec.id).await
    }
    .await;
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            // Undo: the task (if created), the rootfs, the helper's FIFOs.
            let _ = task::kill(&s, &rec.id, libc::SIGKILL as u32, true).await;
            if let Err(de) = task::delete(&s, &rec.id).await {
                tracing::error!(error = %de, "deleting the task of a failed StartContainer");
            }
            unmount_rootfs(crid, &rec.id).await;
            release_io(crid, &rec).await;
            return Err(e);
        }
    };
    let started_at = now_ns();
    crid.containers.update(&rec.id, |r| {
        r.state = ContainerState::Running;
        r.started_at = started_at;
        r.pid = Some(pid);
    })?;
    tracing::info!(pid, "container started");
    super::events::container(crid, &rec, ContainerEventType::ContainerStartedEvent).await;
    if let Ok(Some(now)) = crid.containers.get(&rec.id) {
        crate::nri::notify_container(crid, crid_proto::nri::Event::PostStartContainer, &now).await;
    }
    Ok(())
}

/// Mounts the idmapped rootfs of container `id` in `sb`'s user namespace.
async fn mount_idmapped_rootfs(
    crid: &Crid,
    sb: &crate::sandbox::record::SandboxRecord,
    id: &str,
    mounts: Vec<crid_proto::containerd::types::Mount>,
) -> Result<()> {
    let ns = sb
        .user_namespace
        .clone()
        .ok_or_else(|| Error::Internal(format!("pod sandbox {} has no user namespace", sb.id)))?;
    let root = ns.host_root().ok_or_else(|| {
        Error::Internal(format!(
            "pod sandbox {}'s user namespace does not map root",
            sb.id
        ))
    })?;
    let (runtime_dir, id, pin) = (
        crid.config.runtime_dir.clone(),
        id.to_string(),
        super::container::ns_user_pin(sb),
    );
    tokio::task::spawn_blocking(move || {
        crate::userns::rootfs::mount(&runtime_dir, &id, &mounts, &pin, root)
    })
    .await
    .map_err(|e| Error::Internal(format!("rootfs mount task failed: {e}")))??;
    Ok(())
}

/// Unmounts container `id`'s idmapped rootfs, if it has one; logged on failure.
async fn unmount_rootfs(crid: &Crid, id: &str) {
    if let Err(e) = crate::userns::rootfs::unmount(&crid.config.runtime_dir, id) {
        tracing::error!(container = %id, error = %e, "unmounting the container's idmapped rootfs");
    }
}

/// Asks the pod's helper to stop draining a container; a helper that is
/// gone (pod stopped) has nothing left to release.
async fn release_io(crid: &Crid, rec: &ContainerRecord) {
    let Ok(Some(sb)) = crid.sandboxes.get(&rec.sandbox_id) else {
        return;
    };
    if sb.helper_pid.is_none() {
        return;
    }
    let socket = sb.socket();
    let id = rec.id.clone();
    if let Err(e) =
        helper_call(move || helper_client::release_container_io(&socket, &id, HELPER_IO_TIMEOUT))
            .await
    {
        tracing::debug!(container = %rec.id, error = %e, "releasing the container's stdio");
    }
}

/// Records the exit of container `id`'s task: deletes the task (reaping it
/// in containerd; `hint` is what an event or Wait already said) and marks
/// the record Exited. Idempotent.
pub async fn handle_exit(crid: &Crid, id: &str, hint: Option<TaskExit>) -> Result<()> {
    let lock = crid.containers.op_lock(id);
    let _held = lock.lock().await;
    let Some(rec) = crid.containers.get(id)? else {
        return Ok(());
    };
    if rec.state != ContainerState::Running {
        return Ok(());
    }
    let s = Session::plain(&crid.containerd);
    let deleted = match task::delete(&s, id).await {
        Ok(d) => {
            // The task is gone: nothing uses its rootfs any more.
            unmount_rootfs(crid, id).await;
            d
        }
        // Exited but not deletable (e.g. `runc delete` failed): the container
        // is stopped all the same, so its exit is recorded; RemoveContainer
        // and StopPodSandbox delete the task again.
        Err(e) => match task::state(&s, id).await {
            Ok(TaskState::Stopped(x)) => {
                tracing::warn!(container = %id, error = %e, "the exited task could not be deleted yet");
                Some(x)
            }
            _ => return Err(e),
        },
    };
    let (code, at, reason) = match deleted.or(hint) {
        Some(e) => {
            let code = e.exit_status as i32;
            (code, e.exited_at, exit::reason(code, rec.oom_killed))
        }
        None => (exit::UNKNOWN_EXIT_CODE, 0, exit::UNKNOWN),
    };
    let message = exit::termination_message(&rec);
    let finished_at = if at > 0 { at } else { now_ns() };
    crid.containers.update(id, |r| {
        r.state = ContainerState::Exited;
        r.exit_code = code;
        r.finished_at = finished_at.max(r.started_at);
        r.reason = reason.to_string();
        r.message = message;
        r.pid = None;
    })?;
    tracing::info!(container = %id, exit_code = code, reason, "container exited");
    super::events::container(crid, &rec, ContainerEventType::ContainerStoppedEvent).await;
    // NRI StopContainer: once per exit, whoever noticed it (an exit event,
    // StopContainer, StopPodSandbox), still under the op lock so it comes
    // before RemoveContainer's event.
    if let Ok(Some(now)) = crid.containers.get(id) {
        crate::nri::container_stopped(crid, &now).await;
    }
    Ok(())
}

/// `StopContainer`: the image's StopSignal, SIGKILL after `timeout` seconds
/// (at once for 0). A container that is not running is left as it is; an
/// unknown id succeeds (the CRI: idempotent, "must not return an error if
/// the container has already been stopped"; containerd ≥ 1.6.35 does the
/// same), an empty or ambiguous id prefix is InvalidArgument.
pub async fn stop(
    crid: &Crid,
    req: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse> {
    let Some(rec) = crid.containers.get(&req.container_id)? else {
        tracing::debug!(container = %req.container_id, "StopContainer of an unknown container: nothing to do");
        return Ok(cri::StopContainerResponse {});
    };
    tracing::Span::current().record("container", rec.id.as_str());
    tracing::Span::current().record("pod", rec.sandbox_id.as_str());
    stop_record(crid, &rec, req.timeout.max(0) as u64).await?;
    Ok(cri::StopContainerResponse {})
}

/// Stops one container (see [`stop`]) and records its exit.
pub async fn stop_record(crid: &Crid, rec: &ContainerRecord, timeout_secs: u64) -> Result<()> {
    if rec.state != ContainerState::Running {
        return Ok(());
    }
    let s = Session::plain(&crid.containerd);
    let id = rec.id.as_str();
    // `Some(_)` once the task is known to have ended, with its exit when
    // the Wait could still tell.
    let mut ended = None;
    if timeout_secs > 0 {
        task::kill(&s, id, exit::stop_signal(rec), false).await?;
        match tokio::time::timeout(Duration::from_secs(timeout_secs), task::wait(&s, id)).await {
            Ok(r) => ended = Some(r?),
            Err(_) => tracing::info!(container = %id, timeout_secs, "stop signal ignored; killing"),
        }
    }
    if ended.is_none() {
        // `all`: in the pod's shared PID namespace the container's other
        // processes do not die with its first one.
        task::kill(&s, id, libc::SIGKILL as u32, true).await?;
        match tokio::time::timeout(KILL_WAIT, task::wait(&s, id)).await {
            Ok(r) => ended = Some(r?),
            Err(_) => {
                return Err(Error::DeadlineExceeded(format!(
                    "container {id} did not die within {KILL_WAIT:?} of SIGKILL"
                )))
            }
        }
    }
    // The event's exit handler may hold the op lock right now (its Delete
    // is what cut the Wait short): this waits for it and finds `Exited`.
    handle_exit(crid, id, ended.flatten()).await
}

/// Stops every running container of a pod at once (StopPodSandbox kills
/// what the kubelet has not stopped gracefully, as containerd's CRI does),
/// then deletes any exited task left behind (one [`handle_exit`] could not
/// delete would keep the pod's shim, and so its cgroup, alive).
pub async fn stop_of_sandbox(crid: &Crid, sandbox_id: &str) -> Result<()> {
    let recs = crid.containers.of_sandbox(sandbox_id);
    let stops = recs.iter().map(|r| stop_record(crid, r, 0));
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    let s = Session::plain(&crid.containerd);
    for r in crid.containers.of_sandbox(sandbox_id) {
        if r.state == ContainerState::Exited {
            task::delete(&s, &r.id).await?;
        }
    }
    Ok(())
}

/// Evicts a container for an NRI plugin: killed at once, its exit recorded
/// (the kubelet sees it exited and acts by its restart policy).
pub async fn evict(crid: &Crid, id: &str) -> Result<()> {
    let Some(rec) = crid.containers.get(id)? else {
        return Err(Error::NotFound(format!("container {id} not found")));
    };
    stop_record(crid, &rec, 0).await
}

/// Before RemoveContainer deletes a container: kill it if running, and
/// release its stdio in the helper.
pub async fn before_remove(crid: &Crid, rec: &ContainerRecord) -> Result<()> {
    stop_record(crid, rec, 0).await?;
    if rec.state != ContainerState::Created || rec.started_at != 0 {
        release_io(crid, rec).await;
    }
    Ok(())
}

/// `ReopenContainerLog`: the helper reopens the log path the kubelet just
/// renamed away; answers once the new file exists.
pub async fn reopen_log(
    crid: &Crid,
    req: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse> {
    let rec = get(crid, &req.container_id)?;
    if rec.state != ContainerState::Running {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running",
            rec.id
        )));
    }
    let sb = crid
        .sandboxes
        .get(&rec.sandbox_id)?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {} not found", rec.sandbox_id)))?;
    let socket = sb.socket();
    let id = rec.id.clone();
    helper_call(move || helper_client::reopen_container_log(&socket, &id, HELPER_IO_TIMEOUT))
        .await
        .map_err(|e| Error::Internal(format!("pod helper could not reopen the log: {e}")))?;
    Ok(cri::ReopenContainerLogResponse {})
}

/// Brings Running records in line with containerd's tasks: exits missed
/// while crid or containerd were down are recorded.
pub async fn reconcile(crid: &Crid) {
    let s = Session::plain(&crid.containerd);
    for rec in crid.containers.all() {
        if rec.state == ContainerState::Created {
            discard_task_of_failed_start(crid, &s, &rec.id).await;
            continue;
        }
        if rec.state != ContainerState::Running {
            continue;
        }
        match task::state(&s, &rec.id).await {
            Ok(TaskState::Alive { .. }) => {}
            Ok(TaskState::Stopped(e)) => {
                if let Err(err) = handle_exit(crid, &rec.id, Some(e)).await {
                    tracing::warn!(container = %rec.id, error = %err, "recording a missed exit");
                }
            }
            Ok(TaskState::Absent) => {
                tracing::warn!(container = %rec.id, "task vanished while crid was away");
                if let Err(err) = handle_exit(crid, &rec.id, None).await {
                    tracing::warn!(container = %rec.id, error = %err, "recording a lost task");
                }
            }
            Err(e) => tracing::warn!(container = %rec.id, error = %e, "reading task state"),
        }
    }
}

/// A Created container with a task in containerd: a StartContainer whose
/// answer was lost (containerd died after making the task; the start's
/// undo could not reach it). Unless a StartContainer holds the container
/// right now, the task goes, so CREATED stays true.
async fn discard_task_of_failed_start(crid: &Crid, s: &Session, id: &str) {
    let lock = crid.containers.op_lock(id);
    let Ok(_held) = lock.try_lock() else {
        return;
    };
    if !matches!(crid.containers.get(id), Ok(Some(r)) if r.state == ContainerState::Created) {
        return;
    }
    if let Err(e) = discard_cut_task(s, id).await {
        tracing::warn!(container = %id, error = %e, "discarding the task of a failed StartContainer");
    }
}

/// Kills and deletes the task of a container recorded as Created: one
/// exists only when a StartContainer was cut by a crash after containerd
/// made it, or containerd died before answering (the record was never
/// marked Running). Absent is fine. The caller makes sure no
/// StartContainer is in flight (at start before serving, or holding the
/// container's op lock).
async fn discard_cut_task(s: &Session, id: &str) -> Result<()> {
    match task::state(s, id).await? {
        TaskState::Absent => return Ok(()),
        TaskState::Alive { .. } => {
            task::kill(s, id, libc::SIGKILL as u32, true).await?;
            let _ = tokio::time::timeout(KILL_WAIT, task::wait(s, id)).await;
        }
        TaskState::Stopped(_) => {}
    }
    tracing::warn!(container = %id, "deleting the task of a StartContainer cut by a crash");
    task::delete(s, id).await.map(|_| ())
}

/// Clears what calls cut by a crash left in containerd: the task of a
/// container still recorded as Created (a cut StartContainer; the
/// container is then truly not running, and Start or Remove work on it),
/// and containerd containers that crid has no record of: a
/// CreateContainer cut by a crash of crid between containerd's
/// `containers.create` and the record's write (its undo never ran). Run
/// once at start, before requests are served, so no CreateContainer is in
/// flight. Their task (if any) is killed and deleted, then container and
/// snapshot go; one whose record file exists but is damaged is kept.
/// Active snapshots keyed by an unrecorded container id go too.
/// Returns how many containers and snapshots were removed.
pub async fn sweep_unrecorded(crid: &Crid) -> Result<usize> {
    let s = Session::plain(&crid.containerd);
    // Created containers are truly not running: a task a cut StartContainer
    // left goes.
    for rec in crid.containers.all() {
        if rec.state == ContainerState::Created {
            if let Err(e) = discard_cut_task(&s, &rec.id).await {
                tracing::warn!(container = %rec.id, error = %e, "discarding the task of a cut StartContainer");
            }
        }
    }
    let mut removed = 0;
    let listed = crate::container::ctrd::list_containers(&s).await?;
    let in_containerd: std::collections::HashSet<String> =
        listed.iter().map(|(id, _, _)| id.clone()).collect();
    for (id, snapshotter, key) in listed {
        match crid.containers.get(&id) {
            Ok(None) => {}
            // Known, or not resolvable (an ambiguous prefix): keep.
            Ok(Some(_)) | Err(_) => continue,
        }
        // A record file that exists but could not be read (reported at
        // open) still claims the container: keep it for the repair.
        if !unclaimed(crid, &id) {
            tracing::warn!(container = %id, "keeping a containerd container whose crid record is unreadable");
            continue;
        }
        tracing::warn!(container = %id, "removing a containerd container crid has no record of (a CreateContainer cut by a crash)");
        let _ = task::kill(&s, &id, 9, true).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), task::wait(&s, &id)).await;
        if let Err(e) = task::delete(&s, &id).await {
            tracing::warn!(container = %id, error = %e, "deleting an unrecorded container's task");
            continue;
        }
        match crate::container::ctrd::remove_all(&s, &id, &snapshotter, &key).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "removing an unrecorded container")
            }
        }
    }
    // A CreateContainer cut between the snapshot's prepare and the
    // container's create leaves an active snapshot keyed by the container
    // id (or `<id>-imgvol-<n>`) under a lease that outlives the crash.
    let snapshotter = &crid.config.containerd.snapshotter;
    for key in crate::container::ctrd::active_snapshots(&s, snapshotter).await? {
        let id = key.split("-imgvol-").next().unwrap_or_default();
        let is_container_key = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_container_key
            || in_containerd.contains(id)
            || !matches!(crid.containers.get(id), Ok(None))
            || !unclaimed(crid, id)
        {
            continue;
        }
        tracing::warn!(snapshot = %key, "removing the snapshot of a CreateContainer cut by a crash");
        match crate::container::ctrd::remove_snapshot(&s, snapshotter, &key).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(snapshot = %key, error = %e, "removing an unrecorded snapshot")
            }
        }
    }
    Ok(removed)
}

/// No record file, readable or not, names container `id`.
fn unclaimed(crid: &Crid, id: &str) -> bool {
    crid_common::ids::check_component("container id", id).is_ok()
        && !crid
            .config
            .state_dir
            .join("containers")
            .join(format!("{id}.json"))
            .exists()
}

/// Follows containerd's task exit and OOM events for crid's namespace until
/// crid stops; after every (re)subscription it reconciles, so an exit that
/// happened while the stream was down is not lost.
pub fn spawn_event_loop(crid: Arc<Crid>) -> tokio::task::JoinHandle<()> {
    // A safety net for an exit that slipped between a reconciliation and
    // the (re)registration of the subscription.
    let periodic = Arc::clone(&crid);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            reconcile(&periodic).await;
        }
    });
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match follow_events(&crid).await {
                Ok(()) => tracing::warn!("containerd event stream ended; resubscribing"),
                Err(e) => tracing::debug!(error = %e, "containerd event stream unavailable"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn follow_events(crid: &Arc<Crid>) -> Result<()> {
    let ns = &crid.config.containerd.namespace;
    let filters = ["/tasks/exit", "/tasks/oom"]
        .iter()
        .map(|t| format!("namespace=={ns},topic==\"{t}\""))
        .collect();
    // containerd sends the stream's headers with its first event, so the
    // call below may wait for one; reconcile meanwhile, once the request
    // has had time to register (handling an exit twice is harmless).
    let early = Arc::clone(crid);
    let recon = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reconcile(&early).await;
    });
    let sub = EventsClient::new(crid.containerd.channel())
        .subscribe(SubscribeRequest { filters })
        .await;
    let mut stream = match sub {
        Ok(s) => s.into_inner(),
        Err(st) => {
            recon.abort();
            return Err(crate::image::session::cerr("events.subscribe")(st));
        }
    };
    tracing::debug!("subscribed to containerd task events");
    while let Some(env) = stream
        .message()
        .await
        .map_err(crate::image::session::cerr("events.stream"))?
    {
        if env.namespace != *ns {
            continue;
        }
        let Some(ev) = env.event else { continue };
        match env.topic.as_str() {
            "/tasks/exit" => {
                let Ok(e) = TaskExitEvent::decode(ev.value.as_slice()) else {
                    tracing::warn!("undecodable task exit event");
                    continue;
                };
                // Exec processes end too; only the main process ends the container.
                if e.id != e.container_id {
                    continue;
                }
                let hint = TaskExit {
                    exit_status: e.exit_status,
                    exited_at: task::timestamp_ns(e.exited_at.as_ref()),
                };
                let crid = Arc::clone(crid);
                tokio::spawn(async move {
                    if let Err(err) = handle_exit(&crid, &e.container_id, Some(hint)).await {
                        tracing::warn!(container = %e.container_id, error = %err, "handling a task exit");
                    }
                });
            }
            "/tasks/oom" => {
                let Ok(e) = TaskOom::decode(ev.value.as_slice()) else {
                    continue;
                };
                tracing::info!(container = %e.container_id, "OOM kill in the container's cgroup");
                if let Err(err) = crid.containers.update(&e.container_id, |r| {
                    r.oom_killed = true;
                    // The exit may have been recorded first.
                    if r.state == ContainerState::Exited {
                        r.reason = exit::OOM_KILLED.to_string();
                    }
                }) {
                    tracing::warn!(container = %e.container_id, error = %err, "recording an OOM kill");
                }
            }
            _ => {}
        }
    }
    Ok(())
}
