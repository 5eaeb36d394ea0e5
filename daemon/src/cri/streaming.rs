//! CRI Exec, Attach, PortForward (URLs on crid's streaming listener) and
//! ExecSync.

use super::Crid;
use crate::container::record::{ContainerRecord, ContainerState};
use crate::error::{Error, Result};
use crate::sandbox::record::SandboxRecord;
use crate::streaming::Grant;
use crid_common::protocol::StreamStdio;
use crid_proto::cri;
use std::sync::Arc;

/// The container, which must be running.
fn running_container(crid: &Crid, id: &str) -> Result<ContainerRecord> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("container_id is empty".into()));
    }
    let rec = crid
        .containers
        .get(id)?
        .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
    tracing::Span::current().record("container", rec.id.as_str());
    tracing::Span::current().record("pod", rec.sandbox_id.as_str());
    if rec.state != ContainerState::Running {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running",
            rec.id
        )));
    }
    Ok(rec)
}

async fn sandbox(crid: &Arc<Crid>, id: &str) -> Result<Option<SandboxRecord>> {
    let sandboxes = Arc::clone(&crid.sandboxes);
    let id = id.to_string();
    tokio::task::spawn_blocking(move || sandboxes.get(&id))
        .await
        .map_err(|e| Error::Internal(format!("reading the sandbox: {e}")))?
}

fn url(crid: &Crid, grant: Grant) -> Result<String> {
    crid.streaming.url(grant).map_err(Error::Internal)
}

/// CRI Exec: a URL for a new process in a running container.
pub async fn exec(crid: &Arc<Crid>, req: cri::ExecRequest) -> Result<cri::ExecResponse> {
    let rec = running_container(crid, &req.container_id)?;
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("cmd is empty".into()));
    }
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout or stderr must be set".into(),
        ));
    }
    if req.tty && req.stderr {
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be set".into(),
        ));
    }
    let url = url(
        crid,
        Grant::Exec {
            sandbox_id: rec.sandbox_id,
            container_id: rec.id,
            cmd: req.cmd,
            stdio: StreamStdio {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            },
        },
    )?;
    Ok(cri::ExecResponse { url })
}

/// CRI Attach: a URL for the container's own stdio.
pub async fn attach(crid: &Arc<Crid>, req: cri::AttachRequest) -> Result<cri::AttachResponse> {
    let rec = running_container(crid, &req.container_id)?;
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout or stderr must be set".into(),
        ));
    }
    // The container's own stdio decides: no stdin unless it has one, and
    // one merged stream with its tty (as containerd's CRI plugin does).
    let url = url(
        crid,
        Grant::Attach {
            sandbox_id: rec.sandbox_id,
            container_id: rec.id,
            stdio: StreamStdio {
                stdin: req.stdin && rec.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !rec.tty,
                tty: rec.tty,
            },
        },
    )?;
    Ok(cri::AttachResponse { url })
}

/// CRI PortForward: a URL for ports of a ready pod.
pub async fn port_forward(
    crid: &Arc<Crid>,
    req: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Error::InvalidArgument("pod_sandbox_id is empty".into()));
    }
    let sb = sandbox(crid, &req.pod_sandbox_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {} not found", req.pod_sandbox_id)))?;
    tracing::Span::current().record("pod", sb.id.as_str());
    if !sb.is_ready() {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sb.id
        )));
    }
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Error::InvalidArgument(format!("invalid port {p}")));
    }
    let url = url(crid, Grant::PortForward { sandbox_id: sb.id })?;
    Ok(cri::PortForwardResponse { url })
}

/// Output kept per stream by ExecSync (the kubelet's cap).
pub const EXEC_SYNC_MAX_OUTPUT: usize = 16 << 20;
/// stdout + stderr of one ExecSync answer stay below the 16 MiB gRPC
/// message limit the kubelet receives with (some room for the envelope).
pub const EXEC_SYNC_RESPONSE_BUDGET: usize = (16 << 20) - (64 << 10);

/// Fits both outputs into [`EXEC_SYNC_RESPONSE_BUDGET`]: stderr keeps up to
/// half, stdout the rest.
fn fit_outputs(mut stdout: Vec<u8>, mut stderr: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if stdout.len() + stderr.len() > EXEC_SYNC_RESPONSE_BUDGET {
        let err_room = stderr.len().min(EXEC_SYNC_RESPONSE_BUDGET / 2);
        stderr.truncate(err_room);
        stdout.truncate(EXEC_SYNC_RESPONSE_BUDGET - err_room);
    }
    (stdout, stderr)
}

/// The exit code reported when the runtime could not start the command
/// (what a shell reports: 127 not found, 126 not executable/other).
fn start_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("not found") || m.contains("no such file") {
        127
    } else {
        126
    }
}

/// ExecSync when the pod's helper is its shim: the helper starts the
/// process with the OCI runtime itself and answers with its exit and
/// output; no containerd call is on the probe's path (CRI-O's conmon runs
/// ExecSync the same way). `Ok(None)`: the helper predates this (protocol
/// revision < 3); containerd's path is taken instead.
async fn exec_sync_in_helper(
    crid: &Arc<Crid>,
    rec: &ContainerRecord,
    sb: &SandboxRecord,
    exec_id: &str,
    req: &cri::ExecSyncRequest,
) -> Result<Option<cri::ExecSyncResponse>> {
    use crid_common::protocol::{read_frame, ExecSyncOutcome, ExecSyncRun, StreamEvent};
    use tokio::io::AsyncReadExt;

    let mut phases = crate::timing::Phases::new();
    let spec = crate::container::exec::process_spec(&rec.spec, &req.cmd, false)?;
    let run = ExecSyncRun {
        container_id: rec.id.clone(),
        exec_id: exec_id.to_string(),
        process: serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?,
        timeout_ms: u64::try_from(req.timeout).unwrap_or(0).saturating_mul(1000),
        max_output: EXEC_SYNC_MAX_OUTPUT,
    };
    // As on containerd's path: a few runtime starts at a time per pod.
    let slot = crid
        .streaming
        .exec_starts(&rec.sandbox_id)
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let helper_err = |e: String| Error::Internal(format!("pod helper: {e}"));
    let Some(mut ctl) = crate::helper_client::exec_sync_run(&sb.socket(), run)
        .await
        .map_err(helper_err)?
    else {
        return Ok(None);
    };
    phases.mark("helper");
    let events = async {
        let mut slot = Some(slot);
        loop {
            match read_frame::<_, StreamEvent>(&mut ctl).await {
                Ok(Some(StreamEvent::ExecStarted { .. })) => {
                    slot = None;
                    phases.mark("exec_start");
                }
                Ok(Some(StreamEvent::ExecSyncDone(outcome))) => {
                    drop(slot);
                    return Ok(outcome);
                }
                Ok(other) => return Err(format!("answered {other:?} for an exec")),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    // The helper enforces the timeout; this only bounds a helper that hangs.
    let outcome = if req.timeout > 0 {
        let limit = std::time::Duration::from_secs(req.timeout as u64 + 15);
        tokio::time::timeout(limit, events)
            .await
            .map_err(|_| Error::DeadlineExceeded(format!("pod helper silent after {limit:?}")))?
    } else {
        events.await
    }
    .map_err(helper_err)?;
    let (exit_code, out_len, err_len) = match outcome {
        ExecSyncOutcome::Exited {
            exit_code,
            stdout_len,
            stderr_len,
        } if stdout_len <= EXEC_SYNC_MAX_OUTPUT && stderr_len <= EXEC_SYNC_MAX_OUTPUT => {
            (exit_code, stdout_len, stderr_len)
        }
        ExecSyncOutcome::Exited { .. } => {
            return Err(Error::Internal("pod helper: output over the cap".into()))
        }
        ExecSyncOutcome::TimedOut => {
            return Err(Error::DeadlineExceeded(format!(
                "timeout {}s exceeded: command {:?} killed",
                req.timeout, req.cmd
            )))
        }
        ExecSyncOutcome::StartFailed { message } => {
            return Ok(Some(cri::ExecSyncResponse {
                stdout: Vec::new(),
                exit_code: start_failure_code(&message),
                stderr: message.into_bytes(),
            }))
        }
        ExecSyncOutcome::Refused { message, not_found } => {
            return Err(if not_found {
                Error::NotFound(message)
            } else {
                Error::FailedPrecondition(message)
            })
        }
    };
    phases.mark("exit");
    let mut stdout = vec![0u8; out_len];
    let mut stderr = vec![0u8; err_len];
    ctl.read_exact(&mut stdout)
        .await
        .map_err(|e| helper_err(e.to_string()))?;
    ctl.read_exact(&mut stderr)
        .await
        .map_err(|e| helper_err(e.to_string()))?;
    let (stdout, stderr) = fit_outputs(stdout, stderr);
    phases.mark("output");
    tracing::debug!(exec_id, phases = %phases.summary(), "ExecSync timings (in the helper)");
    Ok(Some(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code,
    }))
}

/// CRI ExecSync: runs `cmd` in the container, its output collected by the
/// pod's helper. A timeout kills the process and answers DeadlineExceeded
/// (what the kubelet reads as a probe timeout); a command the runtime cannot
/// start answers its message on stderr with exit code 126/127.
pub async fn exec_sync(
    crid: &Arc<Crid>,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse> {
    use crate::container::exec::{self, ExecStdio};
    use crid_common::protocol::{read_frame, write_frame, StreamControl, StreamEvent};
    use tokio::io::AsyncReadExt;

    let mut phases = crate::timing::Phases::new();
    let rec = running_container(crid, &req.container_id)?;
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("cmd is empty".into()));
    }
    let sb = sandbox(crid, &rec.sandbox_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {} not found", rec.sandbox_id)))?;
    let exec_id = crate::streaming::session::new_exec_id().map_err(Error::Internal)?;
    if sb.shim.is_some() {
        if let Some(r) = exec_sync_in_helper(crid, &rec, &sb, &exec_id, &req).await? {
            return Ok(r);
        }
    }
    let mut ctl = crate::helper_client::exec_sync_channel(
        &sb.socket(),
        &rec.id,
        &exec_id,
        EXEC_SYNC_MAX_OUTPUT,
    )
    .await
    .map_err(|e| Error::Internal(format!("pod helper: {e}")))?;
    let helper_err =
        |e: crid_common::protocol::FrameError| Error::Internal(format!("pod helper: {e}"));
    let io = match read_frame::<_, StreamEvent>(&mut ctl)
        .await
        .map_err(helper_err)?
    {
        Some(StreamEvent::ExecIo { stdout, stderr, .. }) => ExecStdio {
            stdin: None,
            stdout,
            stderr,
            terminal: false,
        },
        other => {
            return Err(Error::Internal(format!(
                "pod helper answered {other:?} for exec FIFOs"
            )))
        }
    };
    phases.mark("helper_fifos");
    let wait = match crate::streaming::session::start_process(
        crid, &rec.id, &exec_id, &req.cmd, &io,
    )
    .await
    {
        Ok(w) => w,
        Err(Error::Containerd(c)) if c.op == "tasks.start" => {
            let message = c.status.message().to_string();
            let _ = write_frame(
                &mut ctl,
                &StreamControl::StartFailed {
                    message: message.clone(),
                },
            )
            .await;
            return Ok(cri::ExecSyncResponse {
                stdout: Vec::new(),
                stderr: message.clone().into_bytes(),
                exit_code: start_failure_code(&message),
            });
        }
        Err(e) => {
            let message = e.to_string();
            let _ = write_frame(&mut ctl, &StreamControl::StartFailed { message }).await;
            return Err(e);
        }
    };
    phases.mark("exec_start");
    write_frame(&mut ctl, &StreamControl::Started)
        .await
        .map_err(helper_err)?;
    let mut wait = wait;
    let exit = if req.timeout > 0 {
        let limit = std::time::Duration::from_secs(req.timeout as u64);
        match tokio::time::timeout(limit, &mut wait).await {
            Ok(r) => r,
            Err(_) => {
                let _ = exec::kill(&crid.containerd, &rec.id, &exec_id).await;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
                let _ = exec::delete(&crid.containerd, &rec.id, &exec_id).await;
                let _ = write_frame(&mut ctl, &StreamControl::Exited { exit_code: -1 }).await;
                return Err(Error::DeadlineExceeded(format!(
                    "timeout {}s exceeded: command {:?} killed",
                    req.timeout, req.cmd
                )));
            }
        }
    } else {
        wait.await
    };
    phases.mark("wait_exit");
    // The exited process is deleted from containerd after the answer: the
    // exit code is known, and the shim's delete is not on the probe's path.
    let (ctrd, cid, eid) = (crid.containerd.clone(), rec.id.clone(), exec_id.clone());
    tokio::spawn(async move {
        if let Err(e) = exec::delete(&ctrd, &cid, &eid).await {
            tracing::debug!(error = %e, exec_id = %eid, "deleting an ExecSync process");
        }
    });
    let exit_code = exit.map_err(|e| Error::Internal(format!("exec wait: {e}")))??;
    write_frame(&mut ctl, &StreamControl::Exited { exit_code })
        .await
        .map_err(helper_err)?;
    let (out_len, err_len) = match read_frame::<_, StreamEvent>(&mut ctl)
        .await
        .map_err(helper_err)?
    {
        Some(StreamEvent::Output {
            stdout_len,
            stderr_len,
        }) if stdout_len <= EXEC_SYNC_MAX_OUTPUT && stderr_len <= EXEC_SYNC_MAX_OUTPUT => {
            (stdout_len, stderr_len)
        }
        other => {
            return Err(Error::Internal(format!(
                "pod helper answered {other:?} for exec output"
            )))
        }
    };
    let mut stdout = vec![0u8; out_len];
    let mut stderr = vec![0u8; err_len];
    ctl.read_exact(&mut stdout)
        .await
        .map_err(|e| Error::Internal(format!("pod helper: {e}")))?;
    ctl.read_exact(&mut stderr)
        .await
        .map_err(|e| Error::Internal(format!("pod helper: {e}")))?;
    let (stdout, stderr) = fit_outputs(stdout, stderr);
    phases.mark("output");
    tracing::debug!(exec_id = %exec_id, phases = %phases.summary(), "ExecSync timings");
    Ok(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_fit_the_message_budget() {
        let (o, e) = fit_outputs(vec![1; 10], vec![2; 5]);
        assert_eq!((o.len(), e.len()), (10, 5));
        let (o, e) = fit_outputs(vec![1; EXEC_SYNC_MAX_OUTPUT], vec![]);
        assert_eq!((o.len(), e.len()), (EXEC_SYNC_RESPONSE_BUDGET, 0));
        let (o, e) = fit_outputs(vec![1; EXEC_SYNC_MAX_OUTPUT], vec![2; EXEC_SYNC_MAX_OUTPUT]);
        assert_eq!(o.len() + e.len(), EXEC_SYNC_RESPONSE_BUDGET);
        assert_eq!(e.len(), EXEC_SYNC_RESPONSE_BUDGET / 2);
    }

    #[test]
    fn start_failures_map_like_a_shell() {
        assert_eq!(
            start_failure_code(
                "OCI runtime exec failed: exec: \"nope\": executable file not found in $PATH: unknown"
            ),
            127
        );
        assert_eq!(start_failure_code("permission denied"), 126);
    }
}
