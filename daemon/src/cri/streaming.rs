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
        .get(id)
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
        .map_err(|e| Error::Internal(format!("reading the sandbox: {e}")))
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
