//! Starting, talking to and ending a pod's helper. The helper runs in its own
//! session (setsid), so signals to crid's process group and a crid restart do
//! not reach it; while it is crid's child, its supervisor thread reaps it.

use crid_common::protocol::{
    check_hello, read_frame_sync, write_frame_sync, Hello, Request, Response, SetupReport,
};
use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The helper's comm (truncated to 15 bytes by the kernel), checked before
/// signalling a recorded pid, since pids get reused.
const HELPER_COMM: &str = "crid-pod-helper";
/// The reaper's comm (see the helper's sys module).
const REAPER_COMM: &str = "crid-pod-init";

/// Starts `helper run <spec>` and waits for its set-up report.
pub fn spawn(
    helper: &Path,
    spec: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<(Child, SetupReport), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut cmd = Command::new(helper);
    cmd.arg("run")
        .arg(spec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", helper.display()))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("helper stdout missing".into());
    };
    // Read the one report line on a thread, so a hung helper hits the timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line);
        let _ = tx.send(r);
    });
    let report = match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if !line.trim().is_empty() => serde_json::from_str::<SetupReport>(&line)
            .map_err(|e| format!("helper report {line:?}: {e}")),
        Ok(Ok(_)) => Err("helper exited without a set-up report (see its helper.log)".into()),
        Ok(Err(e)) => Err(format!("reading the helper's report: {e}")),
        Err(_) => Err(format!("helper did not finish set-up within {timeout:?}")),
    };
    match report {
        Ok(r) => Ok((child, r)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Opens a control connection and exchanges hellos.
pub fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, String> {
    let mut s = crid_common::protocol::with_socket_path(socket, |p| UnixStream::connect(p))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write_frame_sync(&mut s, &Hello::ours()).map_err(|e| e.to_string())?;
    let peer: Hello = read_frame_sync(&mut s)
        .map_err(|e| e.to_string())?
        .ok_or("helper closed the connection")?;
    check_hello(&peer).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends one request and reads its response.
pub fn call(s: &mut UnixStream, req: &Request) -> Result<Response, String> {
    write_frame_sync(s, req).map_err(|e| e.to_string())?;
    read_frame_sync(s)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "helper closed the connection".to_string())
}

/// Whether `pid` is alive (not a zombie) and its comm is `comm`.
fn is_live(pid: u32, comm: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ..." — comm may hold spaces/parens; split at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let name = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    name == comm && state != Some('Z')
}

/// Whether the recorded helper pid is still our helper.
pub fn helper_alive(pid: u32) -> bool {
    is_live(pid, HELPER_COMM)
}

/// Ends a helper: Shutdown over its socket, then SIGKILL if it lingers; and
/// the pod's reaper, if it survived. Returns once both are gone.
pub fn end(socket: &Path, helper_pid: Option<u32>, reaper_pid: Option<u32>) -> Result<(), String> {
    // Asked over the socket even when no pid is recorded: crid may have died
    // between the helper's set-up and persisting its pid.
    if helper_pid.is_none_or(helper_alive) && socket.exists() {
        if let Ok(mut s) = connect(socket, Duration::from_secs(2)) {
            let _ = call(&mut s, &Request::Shutdown);
        }
    }
    if let Some(pid) = helper_pid.filter(|p| helper_alive(*p)) {
        if !wait_gone(pid, HELPER_COMM, Duration::from_secs(2)) {
            kill9(pid);
            if !wait_gone(pid, HELPER_COMM, Duration::from_secs(2)) {
                return Err(format!("helper pid {pid} does not exit"));
            }
        }
    }
    if let Some(pid) = reaper_pid.filter(|p| is_live(*p, REAPER_COMM)) {
        kill9(pid);
        if !wait_gone(pid, REAPER_COMM, Duration::from_secs(2)) {
            return Err(format!("pod init pid {pid} does not exit"));
        }
    }
    Ok(())
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn wait_gone(pid: u32, comm: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_live(pid, comm) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !is_live(pid, comm)
}
