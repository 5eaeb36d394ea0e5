//! ExecSync's process started by `crid-exec` (a binary beside the helper)
//! instead of `runc exec`: the same steps as runc's setns process without
//! runc's two Go start-ups (see `src/nsexec/`). It applies where crid-exec
//! exists and the container's runtime is runc; crid-exec itself declines
//! (then `runc exec` is used) for a terminal, an SELinux label or seccomp
//! notify. The process is re-parented to the helper when crid-exec exits.

use super::reaper::Reaper;
use super::runc::ProcIo;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The binary's name, next to crid-pod-helper.
pub const BINARY_NAME: &str = "crid-exec";

/// What crid-exec did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Started: the process's host pid.
    Started(u32),
    /// Could not start it (runc's wording of the error).
    Failed(String),
    /// Not applicable here; nothing was done.
    Unsupported(String),
}

/// Starts processes with crid-exec.
pub struct NativeExec {
    binary: PathBuf,
    reaper: Arc<Reaper>,
}

/// The crid-exec beside this executable, if there is one.
pub fn find() -> Option<PathBuf> {
    let b = std::env::current_exe().ok()?.parent()?.join(BINARY_NAME);
    b.is_file().then_some(b)
}

/// Reads crid-exec's report line.
pub fn parse_report(line: &str) -> Outcome {
    let line = line.trim_end_matches('\n');
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "pid" => match rest.parse() {
            Ok(p) => Outcome::Started(p),
            Err(_) => Outcome::Failed(format!("crid-exec reported {line:?}")),
        },
        "error" => Outcome::Failed(rest.to_string()),
        "unsupported" => Outcome::Unsupported(rest.to_string()),
        _ => Outcome::Failed(format!("crid-exec ended without a report ({line:?})")),
    }
}

impl NativeExec {
    /// Uses `binary`; its exit is collected by `reaper`.
    pub fn new(binary: PathBuf, reaper: Arc<Reaper>) -> NativeExec {
        NativeExec { binary, reaper }
    }

    /// Starts the process described by the JSON file `process` in the
    /// container whose init is `init_pid`, with stdio `io` (duplicated:
    /// the caller keeps its copy for a fallback).
    pub fn start(
        &self,
        id: &str,
        init_pid: u32,
        bundle: &Path,
        process: &Path,
        io: &ProcIo,
    ) -> Outcome {
        let dup = |f: &Option<std::fs::File>| -> std::io::Result<Stdio> {
            Ok(match f {
                Some(f) => Stdio::from(f.try_clone()?),
                None => Stdio::null(),
            })
        };
        let stdio =
            (|| Ok::<_, std::io::Error>((dup(&io.stdin)?, dup(&io.stdout)?, dup(&io.stderr)?)))();
        let (i, o, e) = match stdio {
            Ok(x) => x,
            Err(e) => return Outcome::Unsupported(format!("duplicating stdio: {e}")),
        };
        let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => return Outcome::Unsupported(format!("pipe: {e}")),
        };
        let mut cmd = Command::new(&self.binary);
        cmd.arg(id)
            .arg(init_pid.to_string())
            .arg(bundle)
            .arg(process)
            .stdin(i)
            .stdout(o)
            .stderr(e)
            .current_dir(bundle);
        crate::sys::pass_as_fd3(&mut cmd, w.as_raw_fd());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Unsupported(format!("running {}: {e}", self.binary.display()))
            }
        };
        self.reaper.spawned();
        drop(cmd);
        drop(w);
        let mut line = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut line);
        self.reaper.wait(child.id() as i32);
        parse_report(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read() {
        assert_eq!(parse_report("pid 42\n"), Outcome::Started(42));
        assert_eq!(
            parse_report("error exec failed: x\n"),
            Outcome::Failed("exec failed: x".into())
        );
        assert_eq!(
            parse_report("unsupported a terminal is asked for\n"),
            Outcome::Unsupported("a terminal is asked for".into())
        );
        assert!(matches!(parse_report(""), Outcome::Failed(_)));
    }
}
