//! crid's side of an exec or attach stream, on the control channel the
//! hand-off left open (messages in `crid_common::protocol`):
//!
//! ```text
//! helper                                  crid
//!   ExecIo{fifos}        ───────────▶     Tasks.Exec + Wait + Start
//!                        ◀───────────     Started | StartFailed{message}
//!   Resize{w,h} ...      ───────────▶     Tasks.ResizePty
//!   StdinClosed          ───────────▶     Tasks.CloseIO(stdin)
//!                        ◀───────────     Exited{exit_code}
//!   Finished | EOF       ───────────▶     (process killed if still running)
//! ```
//! Whatever ends the channel early (client gone, helper gone, bad frame)
//! kills and deletes the exec process: nothing outlives its stream.

use crate::container::exec::{self, ExecStdio};
use crate::cri::Crid;
use crid_common::protocol::{StreamControl, StreamEvent, StreamStdio};
use std::sync::Arc;
use tokio::net::UnixStream;

use crid_common::protocol::{read_frame, write_frame};

/// A fresh exec id (one safe path component, unique enough per container).
pub fn new_exec_id() -> Result<String, String> {
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!(
        "exec-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn to_tokio(s: std::os::unix::net::UnixStream) -> Result<UnixStream, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    UnixStream::from_std(s).map_err(|e| e.to_string())
}

/// Runs an exec stream's process: waits for the helper's FIFOs, starts the
/// process, relays resizes, reports the exit; kills it if the stream ends first.
pub async fn exec(
    crid: &Arc<Crid>,
    ctl: std::os::unix::net::UnixStream,
    container_id: &str,
    exec_id: &str,
    cmd: Vec<String>,
    stdio: StreamStdio,
) -> Result<(), String> {
    let mut ctl = to_tokio(ctl)?;
    let io = match read_frame::<_, StreamEvent>(&mut ctl).await {
        Ok(Some(StreamEvent::ExecIo {
            stdin,
            stdout,
            stderr,
        })) => ExecStdio {
            stdin,
            stdout,
            stderr,
            terminal: stdio.tty,
        },
        Ok(Some(StreamEvent::Finished { reason })) => {
            return Err(format!("stream ended before the exec started: {reason}"))
        }
        other => return Err(format!("unexpected answer from the pod helper: {other:?}")),
    };
    let started = start_process(crid, container_id, exec_id, &cmd, &io).await;
    let wait = match started {
        Ok(w) => w,
        Err(e) => {
            let message = e.to_string();
            let _ = write_frame(&mut ctl, &StreamControl::StartFailed { message }).await;
            return Err(format!("exec in {container_id}: {e}"));
        }
    };
    write_frame(&mut ctl, &StreamControl::Started)
        .await
        .map_err(|e| e.to_string())?;
    run_started(crid, &mut ctl, container_id, exec_id, wait).await
}

/// Creates and starts the process; the handle its exit code arrives on.
pub(crate) async fn start_process(
    crid: &Arc<Crid>,
    container_id: &str,
    exec_id: &str,
    cmd: &[String],
    io: &ExecStdio,
) -> crate::error::Result<tokio::task::JoinHandle<crate::error::Result<i32>>> {
    let rec = crid.containers.get(container_id)?.ok_or_else(|| {
        crate::error::Error::NotFound(format!("container {container_id} not found"))
    })?;
    let spec = exec::process_spec(&rec.spec, cmd, io.terminal)?;
    // A burst of execs into one runc shim (one per pod) slows it down
    // dramatically (each start is a `runc exec`); a few at a time per pod
    // keeps it moving, and other pods' execs do not wait.
    let _slot = crid
        .streaming
        .exec_starts(&rec.sandbox_id)
        .acquire_owned()
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    exec::create(&crid.containerd, &rec.id, exec_id, &spec, io).await?;
    let wait = exec::wait(&crid.containerd, &rec.id, exec_id);
    if let Err(e) = exec::start(&crid.containerd, &rec.id, exec_id).await {
        wait.abort();
        let _ = exec::delete(&crid.containerd, &rec.id, exec_id).await;
        return Err(e);
    }
    Ok(wait)
}

async fn run_started(
    crid: &Arc<Crid>,
    ctl: &mut UnixStream,
    container_id: &str,
    exec_id: &str,
    mut wait: tokio::task::JoinHandle<crate::error::Result<i32>>,
) -> Result<(), String> {
    let ctrd = &crid.containerd;
    let (mut r, mut w) = ctl.split();
    let outcome = loop {
        tokio::select! {
            exit = &mut wait => break Some(exit),
            ev = read_frame::<_, StreamEvent>(&mut r) => match ev {
                Ok(Some(StreamEvent::Resize { width, height })) => {
                    if let Err(e) = exec::resize(ctrd, container_id, exec_id, width, height).await {
                        tracing::debug!(error = %e, exec_id, "resize failed");
                    }
                }
                Ok(Some(StreamEvent::StdinClosed)) => {
                    if let Err(e) = exec::close_stdin(ctrd, container_id, exec_id).await {
                        tracing::debug!(error = %e, exec_id, "closing stdin failed");
                    }
                }
                Ok(Some(_)) | Ok(None) | Err(_) => break None,
            }
        }
    };
    match outcome {
        Some(exit) => {
            let exit_code = match exit {
                Ok(Ok(code)) => code,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, exec_id, "waiting for the exec process");
                    -1
                }
                Err(e) => {
                    tracing::warn!(error = %e, exec_id, "exec wait task failed");
                    -1
                }
            };
            let _ = exec::delete(ctrd, container_id, exec_id).await;
            let _ = write_frame(&mut w, &StreamControl::Exited { exit_code }).await;
            // Wait for the helper to finish the stream (or vanish).
            while let Ok(Some(_)) = read_frame::<_, StreamEvent>(&mut r).await {}
            Ok(())
        }
        None => {
            // The stream ended with the process still running.
            let _ = exec::kill(ctrd, container_id, exec_id).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
            let _ = exec::delete(ctrd, container_id, exec_id).await;
            Err(format!(
                "exec {exec_id} in {container_id}: the stream ended before the process; killed it"
            ))
        }
    }
}

/// Runs an attach stream's control channel: terminal resizes of the
/// container's own pty and its stdin's close (`stdin_once`) until the
/// helper ends the stream.
pub async fn attach(
    crid: &Arc<Crid>,
    ctl: std::os::unix::net::UnixStream,
    container_id: &str,
) -> Result<(), String> {
    let mut ctl = to_tokio(ctl)?;
    while let Ok(Some(ev)) = read_frame::<_, StreamEvent>(&mut ctl).await {
        match ev {
            StreamEvent::Resize { width, height } => {
                if let Err(e) =
                    exec::resize(&crid.containerd, container_id, "", width, height).await
                {
                    tracing::debug!(error = %e, container_id, "attach resize failed");
                }
            }
            StreamEvent::StdinClosed => {
                // stdin_once: the shim's writer goes too, so the container reads EOF.
                if let Err(e) = exec::close_stdin(&crid.containerd, container_id, "").await {
                    tracing::debug!(error = %e, container_id, "closing stdin failed");
                }
            }
            StreamEvent::Finished { .. } => break,
            _ => {}
        }
    }
    Ok(())
}
