//! The helper as the pod's containerd shim (runtime `io.containerd.crid.v1`):
//! containerd's task API served over ttrpc on a socket of the pod, driving
//! the OCI runtime directly, so a pod is one process instead of helper +
//! runc shim. `binary.rs` is the `containerd-shim-crid-v1` command containerd
//! runs, which only points containerd at the running helper.

pub mod binary;
mod cgroup;
mod events;
mod mount;
mod nativeexec;
mod oom;
mod procio;
mod reaper;
mod runc;
mod service;
mod stats;
mod task;

use crid_common::protocol::ShimSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// containerd 1.6 calls the task service by its v2 name; the protos crate
/// generates the (wire-identical) v3 one.
const GENERATED_SERVICE: &str = "/containerd.task.v3.Task/";
const SERVED_SERVICE: &str = "/containerd.task.v2.Task/";

/// Why [`ExecRunner::start`] did not start a process.
#[derive(Debug, thiserror::Error)]
pub enum ExecStartError {
    /// The container is unknown here or not running.
    #[error("{message}")]
    Refused {
        /// Why.
        message: String,
        /// No such container.
        not_found: bool,
    },
    /// The OCI runtime failed to start it (its words).
    #[error("{0}")]
    Runtime(String),
}

/// Runs processes in the pod's containers without containerd (CRI
/// ExecSync's short path: one `runc exec`, no task API round trips).
#[derive(Clone)]
pub struct ExecRunner(Arc<task::Tasks>);

impl ExecRunner {
    /// Starts `spec` (an OCI process, JSON) in container `id` with the
    /// given stdout/stderr; `on_exit` gets its exit code. Returns its pid.
    pub fn start(
        &self,
        id: &str,
        exec_id: &str,
        spec: &[u8],
        stdout: std::fs::File,
        stderr: std::fs::File,
        on_exit: Box<dyn FnOnce(u32) + Send>,
    ) -> Result<u32, ExecStartError> {
        let io = runc::ProcIo {
            stdin: None,
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        let tell: task::DirectExit = Box::new(move |x| on_exit(x.code));
        self.0
            .exec_detached(id, exec_id, spec, io, tell)
            .map_err(|e| match e {
                task::TaskError::NotFound(message) => ExecStartError::Refused {
                    message,
                    not_found: true,
                },
                task::TaskError::FailedPrecondition(message) => ExecStartError::Refused {
                    message,
                    not_found: false,
                },
                other => ExecStartError::Runtime(other.to_string()),
            })
    }

    /// SIGKILLs a process [`ExecRunner::start`] started, unless it is over.
    pub fn kill(&self, pid: u32) {
        self.0.kill_detached(pid);
    }
}

/// Starts serving containerd's task API for the pod; runs until the
/// process ends. Returns the runner of ExecSync processes.
pub fn start(spec: &ShimSpec) -> Result<ExecRunner, String> {
    // Container processes are re-parented to the helper when runc exits.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("becoming a child subreaper: {e}"))?;
    let reaper = reaper::Reaper::new();
    let forwarder = events::Forwarder::start(spec.containerd_ttrpc.clone(), spec.namespace.clone())
        .map_err(|e| format!("starting the event forwarder: {e}"))?;
    let mut tasks = task::Tasks::new(
        Arc::clone(&reaper),
        Arc::new(forwarder),
        Arc::new(procio::HostProcOs),
    );
    if spec.native_exec {
        match nativeexec::find() {
            Some(b) => {
                tasks = tasks.with_native(nativeexec::NativeExec::new(b, Arc::clone(&reaper)))
            }
            None => crate::log(&format!(
                "no {} beside the helper: ExecSync uses runc exec",
                nativeexec::BINARY_NAME
            )),
        }
    }
    let tasks = Arc::new(tasks);
    let t = Arc::clone(&tasks);
    let r = Arc::clone(&reaper);
    std::thread::Builder::new()
        .name("shim-reaper".into())
        .stack_size(128 * 1024)
        .spawn(move || r.run(Box::new(move |pid, exit| t.on_exit(pid, exit))))
        .map_err(|e| format!("starting the reaper thread: {e}"))?;
    let runner = ExecRunner(Arc::clone(&tasks));
    let service = service::Service {
        tasks,
        reaper,
        namespace: spec.namespace.clone(),
    };
    let methods: HashMap<_, _> = containerd_shim_protos::create_task(Arc::new(service))
        .into_iter()
        .map(|(k, v)| (k.replace(GENERATED_SERVICE, SERVED_SERVICE), v))
        .collect();
    if let Some(dir) = spec.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&spec.socket);
    let mut server = ttrpc::Server::new()
        .bind(&format!("unix://{}", spec.socket.display()))
        .map_err(|e| format!("binding {}: {e}", spec.socket.display()))?
        .register_service(methods)
        // Per connection: a Wait holds its worker until the process exits,
        // and a new worker is started whenever fewer than `min` are idle;
        // `max` caps the idle ones (each idle thread is ~8 KiB of the pod's
        // memory), not the busy ones. ttrpc wants min < default < max.
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3);
    server
        .start()
        .map_err(|e| format!("starting the shim server: {e}"))?;
    // Serves for the rest of the process's life.
    std::mem::forget(server);
    Ok(runner)
}
