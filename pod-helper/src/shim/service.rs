//! containerd's task service (ttrpc, `containerd.task.v2.Task`) on top of
//! [`Tasks`]: request decoding, the runtime options, rootfs mounts and the
//! mapping of [`TaskError`] to ttrpc codes (the one place).

use super::mount::{mount_all, RootfsMount};
use super::reaper::{Exit, Reaper};
use super::runc::{default_root, RuncCli};
use super::task::{CreateArgs, IoPaths, Status, TaskError, Tasks};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::EnumOrUnknown;
use containerd_shim_protos::types::task::{ProcessInfo, Status as PbStatus};
use std::path::PathBuf;
use std::sync::Arc;
use ttrpc::{Code, TtrpcContext};

/// The task service of one pod.
pub struct Service {
    /// The pod's tasks.
    pub tasks: Arc<Tasks>,
    /// Reaps the runtime's commands.
    pub reaper: Arc<Reaper>,
    /// containerd namespace (default runtime root).
    pub namespace: String,
}

fn status(e: TaskError) -> ttrpc::Error {
    let code = match &e {
        TaskError::NotFound(_) => Code::NOT_FOUND,
        TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
        TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
        TaskError::Internal(_) => Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
}

type R<T> = ttrpc::Result<T>;

/// The fields of containerd's runc `Options` this shim honours.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuncOptions {
    /// `binary_name` (6).
    pub binary: String,
    /// `root` (7).
    pub root: String,
    /// `systemd_cgroup` (9): runc runs with `--systemd-cgroup`.
    pub systemd_cgroup: bool,
}

/// Decodes [`RuncOptions`] from containerd's runc `Options` bytes.
pub fn runc_options(value: &[u8]) -> RuncOptions {
    use containerd_shim_protos::protobuf::CodedInputStream;
    let mut o = RuncOptions::default();
    let mut is = CodedInputStream::from_bytes(value);
    while let Ok(Some(tag)) = is.read_raw_tag_or_eof() {
        let r = match tag >> 3 {
            6 if tag & 7 == 2 => is.read_string().map(|s| o.binary = s),
            7 if tag & 7 == 2 => is.read_string().map(|s| o.root = s),
            9 if tag & 7 == 0 => is.read_bool().map(|b| o.systemd_cgroup = b),
            _ => is.skip_field(
                match containerd_shim_protos::protobuf::rt::WireType::new(tag & 7) {
                    Some(w) => w,
                    None => break,
                },
            ),
        };
        if r.is_err() {
            break;
        }
    }
    o
}

fn io_of(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> IoPaths {
    IoPaths {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

/// What `containerd-shim-crid-v1 delete` needs when the helper is gone.
pub const RUNTIME_FILE: &str = "crid-runtime.json";

impl Service {
    fn create_task(&self, req: &api::CreateTaskRequest) -> Result<u32, TaskError> {
        if req.id.is_empty() || req.id.contains('/') {
            return Err(TaskError::InvalidArgument(format!(
                "bad task id {:?}",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unimplemented(
                "checkpoints are not supported".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() || !bundle.join("config.json").is_file() {
            return Err(TaskError::InvalidArgument(format!(
                "bundle {:?} has no config.json",
                req.bundle
            )));
        }
        let RuncOptions {
            binary,
            root,
            systemd_cgroup,
        } = req
            .options
            .as_ref()
            .map(|o| runc_options(&o.value))
            .unwrap_or_default();
        let binary = if binary.is_empty() {
            "runc".into()
        } else {
            binary
        };
        let root = if root.is_empty() {
            default_root(&self.namespace)
        } else {
            PathBuf::from(root)
        };
        let record =
            serde_json::json!({"binary": binary, "root": root, "systemd_cgroup": systemd_cgroup});
        std::fs::write(bundle.join(RUNTIME_FILE), record.to_string())
            .map_err(|e| TaskError::Internal(format!("writing {RUNTIME_FILE}: {e}")))?;
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let rootfs = bundle.join("rootfs");
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| TaskError::Internal(format!("creating {}: {e}", rootfs.display())))?;
            mount_all(&mounts, &rootfs).map_err(|e| TaskError::Internal(e.to_string()))?;
        }
        let pid = self.tasks.create(
            &req.id,
            CreateArgs {
                bundle,
                io: io_of(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                runtime: Arc::new(RuncCli {
                    binary,
                    root,
                    systemd_cgroup,
                    reaper: Arc::clone(&self.reaper),
                }),
                rootfs_mounted: !mounts.is_empty(),
            },
        )?;
        let tasks = Arc::clone(&self.tasks);
        let id = req.id.clone();
        super::oom::watch(pid, move || tasks.oom(&id));
        Ok(pid)
    }
}

fn pb_status(s: Status) -> PbStatus {
    match s {
        Status::Created => PbStatus::CREATED,
        Status::Running => PbStatus::RUNNING,
        Status::Paused => PbStatus::PAUSED,
        Status::Stopped => PbStatus::STOPPED,
    }
}

fn exit_fields(
    x: Option<Exit>,
) -> (
    u32,
    containerd_shim_protos::protobuf::MessageField<
        containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp,
    >,
) {
    match x {
        Some(x) => (x.code, super::events::timestamp(x.at)),
        None => (0, Default::default()),
    }
}

impl containerd_shim_protos::Task for Service {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> R<api::StateResponse> {
        let (pid, st, exit, io, bundle) =
            self.tasks.state(&req.id, &req.exec_id).map_err(status)?;
        let (exit_status, exited_at) = exit_fields(exit);
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: bundle.display().to_string(),
            pid,
            status: EnumOrUnknown::new(pb_status(st)),
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            terminal: io.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn create(&self, _: &TtrpcContext, req: api::CreateTaskRequest) -> R<api::CreateTaskResponse> {
        let pid = self.create_task(&req).map_err(status)?;
        // The end of a burst of allocation (spec, runc output, bookkeeping).
        crate::sys::trim_heap();
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> R<api::StartResponse> {
        let pid = self.tasks.start(&req.id, &req.exec_id).map_err(status)?;
        // The end of a burst of allocation (spec, runc output, bookkeeping).
        crate::sys::trim_heap();
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> R<api::DeleteResponse> {
        let (pid, exit) = self.tasks.delete(&req.id, &req.exec_id).map_err(status)?;
        // The end of a burst of allocation (spec, runc output, bookkeeping).
        crate::sys::trim_heap();
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: super::events::timestamp(exit.at),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> R<api::PidsResponse> {
        let pids = self.tasks.pids(&req.id).map_err(status)?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> R<Empty> {
        self.tasks.pause(&req.id, true).map_err(status)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> R<Empty> {
        self.tasks.pause(&req.id, false).map_err(status)?;
        Ok(Empty::new())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> R<Empty> {
        self.tasks
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .map_err(status)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> R<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.tasks
            .exec(
                &req.id,
                &req.exec_id,
                io_of(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                spec,
            )
            .map_err(status)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> R<Empty> {
        if let Some(master) = self.tasks.console(&req.id, &req.exec_id).map_err(status)? {
            crate::sys::set_window_size(&master, req.width as u16, req.height as u16)
                .map_err(|e| status(TaskError::Internal(format!("resizing the terminal: {e}"))))?;
        }
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> R<Empty> {
        // The process holds the stdin FIFO itself; its writer is the
        // helper's stream or attach, which closes it. Nothing is held here.
        self.tasks.state(&req.id, &req.exec_id).map_err(status)?;
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> R<Empty> {
        let res = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.tasks.update(&req.id, &res).map_err(status)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> R<api::WaitResponse> {
        let exit = self.tasks.wait(&req.id, &req.exec_id).map_err(status)?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: super::events::timestamp(exit.at),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> R<api::StatsResponse> {
        // The cgroup exists only while the init lives (a stopped init's pid
        // may belong to someone else by now).
        let (pid, st, ..) = self.tasks.state(&req.id, "").map_err(status)?;
        if pid == 0 || st == Status::Stopped {
            return Err(status(TaskError::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            ))));
        }
        let stats = super::stats::metrics(pid).map_err(|e| status(TaskError::Internal(e)))?;
        Ok(api::StatsResponse {
            stats: containerd_shim_protos::protobuf::MessageField::some(stats),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> R<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.tasks.init_pid(&req.id),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> R<Empty> {
        // containerd asks after every task delete; the helper's life is the
        // pod's, ended by crid, never by containerd.
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_decode_binary_root_and_systemd_cgroup() {
        // shim_cgroup (3, skipped), binary_name (6), root (7), systemd_cgroup (9).
        let mut b = vec![0x1a, 2, b'/', b'x', 0x32, 4];
        b.extend_from_slice(b"runc");
        b.extend_from_slice(&[0x3a, 2, b'/', b'r', 0x48, 1]);
        assert_eq!(
            runc_options(&b),
            RuncOptions {
                binary: "runc".into(),
                root: "/r".into(),
                systemd_cgroup: true,
            }
        );
        assert!(!runc_options(&b[..b.len() - 2]).systemd_cgroup);
        assert_eq!(runc_options(&[]), RuncOptions::default());
    }
}
