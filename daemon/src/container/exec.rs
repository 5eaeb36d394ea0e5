//! containerd exec processes for a running container (CRI Exec and
//! ExecSync): the process spec derived from the container's OCI spec, and
//! the Tasks calls Exec, Wait, Start, ResizePty, Kill and DeleteProcess.

use crate::containerd::Containerd;
use crate::error::{ContainerdError, Error, Result};
use crid_proto::containerd::services::v1::tasks_client::TasksClient;
use crid_proto::containerd::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use std::path::PathBuf;

/// The type URL containerd expects on an OCI `Process` spec.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The FIFOs (made by the pod's helper) an exec process gets as stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStdio {
    /// stdin FIFO.
    pub stdin: Option<PathBuf>,
    /// stdout FIFO.
    pub stdout: Option<PathBuf>,
    /// stderr FIFO.
    pub stderr: Option<PathBuf>,
    /// Run on a pty (the shim copies between it and the FIFOs).
    pub terminal: bool,
}

fn cerr(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Containerd(ContainerdError { op, status })
}

/// The exec's process spec: the container's process with `cmd` as args, as
/// containerd's CRI plugin does (`TERM=xterm` added with a terminal).
pub fn process_spec(
    container_spec: &serde_json::Value,
    cmd: &[String],
    terminal: bool,
) -> Result<serde_json::Value> {
    let mut p = container_spec
        .get("process")
        .cloned()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| Error::Internal("the container's spec has no process".into()))?;
    p["args"] = serde_json::json!(cmd);
    p["terminal"] = serde_json::json!(terminal);
    if let Some(obj) = p.as_object_mut() {
        obj.remove("consoleSize");
    }
    if terminal {
        let env = p["env"].as_array().cloned().unwrap_or_default();
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM=")))
        {
            let mut env = env;
            env.push(serde_json::json!("TERM=xterm"));
            p["env"] = serde_json::Value::Array(env);
        }
    }
    Ok(p)
}

fn path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Creates the exec process `exec_id` (not started yet).
pub async fn create(
    ctrd: &Containerd,
    container_id: &str,
    exec_id: &str,
    spec: &serde_json::Value,
    io: &ExecStdio,
) -> Result<()> {
    let value = serde_json::to_vec(spec).map_err(|e| Error::Internal(e.to_string()))?;
    TasksClient::new(ctrd.channel())
        .exec(ctrd.request(ExecProcessRequest {
            container_id: container_id.to_string(),
            stdin: path(&io.stdin),
            stdout: path(&io.stdout),
            stderr: path(&io.stderr),
            terminal: io.terminal,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value,
            }),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map_err(cerr("tasks.exec"))?;
    Ok(())
}

/// Waits for the exec process to exit (call before [`start`], so the exit
/// cannot be missed); its exit code.
pub fn wait(
    ctrd: &Containerd,
    container_id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<Result<i32>> {
    let ctrd = ctrd.clone();
    let req = WaitRequest {
        container_id: container_id.to_string(),
        exec_id: exec_id.to_string(),
    };
    tokio::spawn(async move {
        let r = TasksClient::new(ctrd.channel())
            .wait(ctrd.request(req))
            .await
            .map_err(cerr("tasks.wait"))?;
        // containerd reports signals as 128+n like a shell; 255 for lost.
        Ok(r.into_inner().exit_status as i32)
    })
}

/// Starts the created process; its pid.
pub async fn start(ctrd: &Containerd, container_id: &str, exec_id: &str) -> Result<u32> {
    Ok(TasksClient::new(ctrd.channel())
        .start(ctrd.request(StartRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map_err(cerr("tasks.start"))?
        .into_inner()
        .pid)
}

/// Resizes the process's pty (`exec_id` empty: the container's own).
pub async fn resize(
    ctrd: &Containerd,
    container_id: &str,
    exec_id: &str,
    width: u16,
    height: u16,
) -> Result<()> {
    TasksClient::new(ctrd.channel())
        .resize_pty(ctrd.request(ResizePtyRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            width: u32::from(width),
            height: u32::from(height),
        }))
        .await
        .map_err(cerr("tasks.resize_pty"))?;
    Ok(())
}

/// Closes the shim's write side of the process's stdin FIFO (the shim
/// holds one so that it can be closed by this call): once the helper's side
/// is closed too, the process reads end of file.
pub async fn close_stdin(ctrd: &Containerd, container_id: &str, exec_id: &str) -> Result<()> {
    TasksClient::new(ctrd.channel())
        .close_io(ctrd.request(CloseIoRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
        }))
        .await
        .map_err(cerr("tasks.close_io"))?;
    Ok(())
}

/// Sends SIGKILL to the process; a process already gone is fine.
pub async fn kill(ctrd: &Containerd, container_id: &str, exec_id: &str) -> Result<()> {
    let r = TasksClient::new(ctrd.channel())
        .kill(ctrd.request(KillRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            signal: 9,
            all: false,
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => Err(cerr("tasks.kill")(st)),
    }
}

/// Deletes the (exited) process from containerd; an absent one is fine.
pub async fn delete(ctrd: &Containerd, container_id: &str, exec_id: &str) -> Result<()> {
    let r = TasksClient::new(ctrd.channel())
        .delete_process(ctrd.request(DeleteProcessRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => Err(cerr("tasks.delete_process")(st)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_spec_is_the_containers_with_the_command() {
        let spec = serde_json::json!({
            "process": {"args": ["sleep", "1d"], "env": ["PATH=/bin"], "cwd": "/w",
                        "user": {"uid": 5, "gid": 6}, "consoleSize": {"height": 1, "width": 1}},
            "root": {"path": "rootfs"}
        });
        let cmd = vec!["sh".to_string(), "-c".to_string(), "echo x".to_string()];
        let p = process_spec(&spec, &cmd, false).unwrap();
        assert_eq!(p["args"], serde_json::json!(cmd));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(p["user"]["uid"], 5);
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none());
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin"]));
        let t = process_spec(&spec, &cmd, true).unwrap();
        assert_eq!(t["env"], serde_json::json!(["PATH=/bin", "TERM=xterm"]));
        assert!(process_spec(&serde_json::json!({}), &cmd, false).is_err());
    }
}
