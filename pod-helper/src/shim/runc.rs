//! The OCI runtime (`runc` or a compatible binary) as the shim drives it:
//! one command per operation, behind [`Runtime`] so the task logic can be
//! tested with a recording fake. Commands are reaped by the shim's
//! [`Reaper`], never by `Child::wait`.

use super::reaper::Reaper;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use thiserror::Error;

/// A failed runtime command.
#[derive(Debug, Error)]
pub enum RuncError {
    /// The command could not be started.
    #[error("running {binary}: {source}")]
    Spawn {
        /// The runtime binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed; `message` is its error output.
    #[error("{binary} {op}: {message}")]
    Failed {
        /// The runtime binary.
        binary: String,
        /// The subcommand.
        op: String,
        /// Its own words.
        message: String,
    },
}

impl RuncError {
    /// The process or container was not running (nothing to signal).
    pub fn is_not_running(&self) -> bool {
        match self {
            RuncError::Failed { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("not running")
                    || m.contains("already finished")
                    || m.contains("does not exist")
                    || m.contains("no such process")
            }
            RuncError::Spawn { .. } => false,
        }
    }
}

/// The stdio a container's or exec's process gets; `None`: /dev/null.
#[derive(Default)]
pub struct ProcIo {
    /// Read side for the process.
    pub stdin: Option<File>,
    /// Write side.
    pub stdout: Option<File>,
    /// Write side.
    pub stderr: Option<File>,
}

/// What the shim asks of the OCI runtime.
pub trait Runtime: Send + Sync {
    /// `create`: the container's init process, stopped before the user's
    /// program; returns its pid.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcIo,
        console_socket: Option<&Path>,
    ) -> Result<u32, RuncError>;
    /// `start`: runs the created init's program.
    fn start(&self, id: &str) -> Result<(), RuncError>;
    /// `exec --detach`: a process described by the JSON file `process`;
    /// returns its pid.
    fn exec(
        &self,
        id: &str,
        bundle: &Path,
        exec_id: &str,
        process: &Path,
        io: ProcIo,
        console_socket: Option<&Path>,
    ) -> Result<u32, RuncError>;
    /// `kill`: a signal to the init (`all`: every process of the container).
    fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError>;
    /// `delete` (`force`: even if running).
    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError>;
    /// `ps`: the container's pids.
    fn pids(&self, id: &str) -> Result<Vec<u32>, RuncError>;
    /// `update -r`: new resources from the JSON file.
    fn update(&self, id: &str, resources: &Path) -> Result<(), RuncError>;
    /// `pause` (`true`) or `resume`.
    fn pause(&self, id: &str, pause: bool) -> Result<(), RuncError>;
    /// The runtime's name when it is runc, whose exec crid-exec reproduces
    /// (None: another runtime; its own `exec` is always used).
    fn native_name(&self) -> Option<String> {
        None
    }
}

/// The runtime's state root when the handler names none (as the runc shim).
pub fn default_root(namespace: &str) -> PathBuf {
    Path::new("/run/containerd/runc").join(namespace)
}

/// `runc` (or a compatible binary) run as a command per operation.
pub struct RuncCli {
    /// Binary name or path.
    pub binary: String,
    /// `--root`.
    pub root: PathBuf,
    /// `--systemd-cgroup`: the spec's `cgroupsPath` is runc's systemd
    /// `slice:prefix:name` and runc asks systemd for the container's scope
    /// (containerd's runc option `SystemdCgroup`).
    pub systemd_cgroup: bool,
    /// Reaps the commands.
    pub reaper: Arc<Reaper>,
}

impl RuncCli {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    fn spawn_err(&self) -> impl FnOnce(std::io::Error) -> RuncError + '_ {
        move |source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        }
    }

    /// Runs a command with its output captured; stdout on success.
    fn output(&self, op: &str, mut cmd: Command) -> Result<Vec<u8>, RuncError> {
        use std::io::Read;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(self.spawn_err())?;
        self.reaper.spawned();
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let exit = self.reaper.wait(child.id() as i32);
        if exit.code == 0 {
            Ok(out)
        } else {
            Err(RuncError::Failed {
                binary: self.binary.clone(),
                op: op.into(),
                message: String::from_utf8_lossy(&err).trim().to_string(),
            })
        }
    }

    /// Runs `create`/`exec`, whose own stdio is the process's: errors are
    /// read from the JSON log file instead.
    fn with_io(&self, op: &str, mut cmd: Command, io: ProcIo, log: &Path) -> Result<(), RuncError> {
        fn or_null(f: Option<File>) -> Stdio {
            f.map(Stdio::from).unwrap_or_else(Stdio::null)
        }
        let _ = std::fs::remove_file(log);
        cmd.stdin(or_null(io.stdin))
            .stdout(or_null(io.stdout))
            .stderr(or_null(io.stderr));
        let child = cmd.spawn().map_err(self.spawn_err())?;
        self.reaper.spawned();
        // The process's stdio must not stay open here: the log drain sees
        // end of file only once every writer has closed.
        drop(cmd);
        let exit = self.reaper.wait(child.id() as i32);
        if exit.code == 0 {
            return Ok(());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Err(RuncError::Failed {
            binary: self.binary.clone(),
            op: op.into(),
            message: last_error(&text).unwrap_or_else(|| format!("exit status {}", exit.code)),
        })
    }
}

/// The last error message of a runc JSON log (`{"level":"error","msg":…}`).
pub fn last_error(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
}

fn read_pid(path: &Path) -> Result<u32, RuncError> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| RuncError::Failed {
            binary: String::new(),
            op: "pid file".into(),
            message: format!("no pid in {}", path.display()),
        })
}

impl Runtime for RuncCli {
    fn native_name(&self) -> Option<String> {
        let name = Path::new(&self.binary).file_name()?.to_str()?;
        (name == "runc").then(|| self.binary.clone())
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcIo,
        console_socket: Option<&Path>,
    ) -> Result<u32, RuncError> {
        let log = bundle.join("log.json");
        let pid_file = bundle.join("init.pid");
        let mut cmd = self.command();
        cmd.arg("--log").arg(&log).arg("--log-format").arg("json");
        cmd.arg("create").arg("--bundle").arg(bundle);
        cmd.arg("--pid-file").arg(&pid_file);
        if let Some(s) = console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id).current_dir(bundle);
        self.with_io("create", cmd, io, &log)?;
        read_pid(&pid_file)
    }

    fn start(&self, id: &str) -> Result<(), RuncError> {
        let mut cmd = self.command();
        cmd.arg("start").arg(id);
        self.output("start", cmd).map(drop)
    }

    fn exec(
        &self,
        id: &str,
        bundle: &Path,
        exec_id: &str,
        process: &Path,
        io: ProcIo,
        console_socket: Option<&Path>,
    ) -> Result<u32, RuncError> {
        let log = bundle.join(format!("{exec_id}.log.json"));
        let pid_file = bundle.join(format!("{exec_id}.pid"));
        let mut cmd = self.command();
        cmd.arg("--log").arg(&log).arg("--log-format").arg("json");
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process);
        cmd.arg("--pid-file").arg(&pid_file);
        if let Some(s) = console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id).current_dir(bundle);
        let r = self
            .with_io("exec", cmd, io, &log)
            .and_then(|()| read_pid(&pid_file));
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&pid_file);
        r
    }

    fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.output("kill", cmd).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut cmd = self.command();
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.output("delete", cmd).map(drop)
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        let mut cmd = self.command();
        cmd.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.output("ps", cmd)?;
        Ok(serde_json::from_slice(&out).unwrap_or_default())
    }

    fn update(&self, id: &str, resources: &Path) -> Result<(), RuncError> {
        let mut cmd = self.command();
        cmd.arg("update").arg("--resources").arg(resources).arg(id);
        self.output("update", cmd).map(drop)
    }

    fn pause(&self, id: &str, pause: bool) -> Result<(), RuncError> {
        let mut cmd = self.command();
        let op = if pause { "pause" } else { "resume" };
        cmd.arg(op).arg(id);
        self.output(op, cmd).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_of_a_runc_log() {
        let log = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\nnot json\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some("exec: \"nope\": not found")
        );
        assert_eq!(last_error("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }

    #[test]
    fn not_running_errors_are_recognised() {
        let e = |m: &str| RuncError::Failed {
            binary: "runc".into(),
            op: "kill".into(),
            message: m.into(),
        };
        assert!(e("container not running").is_not_running());
        assert!(e("process already finished").is_not_running());
        assert!(!e("permission denied").is_not_running());
    }
}
