//! Starting, talking to and ending a pod's helper. The helper runs in its own
//! session (setsid), so signals to crid's process group and a crid restart do
//! not reach it; while it is crid's child, its supervisor thread reaps it.

use crid_common::protocol::{
    check_hello, read_frame_sync, write_frame_sync, ContainerIoSpec, Hello, Request, Response,
    SetupReport,
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
    connect_with_hello(socket, timeout).map(|(s, _)| s)
}

/// Like [`connect`], also returning the helper's hello (for its revision).
pub fn connect_with_hello(socket: &Path, timeout: Duration) -> Result<(UnixStream, Hello), String> {
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
    Ok((s, peer))
}

/// Sends one request and reads its response.
pub fn call(s: &mut UnixStream, req: &Request) -> Result<Response, String> {
    write_frame_sync(s, req).map_err(|e| e.to_string())?;
    read_frame_sync(s)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "helper closed the connection".to_string())
}

/// The FIFO paths a helper made for a container's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIoPaths {
    /// stdin FIFO, if asked for.
    pub stdin: Option<std::path::PathBuf>,
    /// stdout FIFO (a TTY's only stream).
    pub stdout: std::path::PathBuf,
    /// stderr FIFO (None with a TTY).
    pub stderr: Option<std::path::PathBuf>,
}

/// One container-io request on a fresh connection to a helper of revision ≥ 1.
fn io_call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let (mut s, peer) = connect_with_hello(socket, timeout)?;
    if peer.revision < 1 {
        return Err(format!(
            "pod helper {} (protocol revision {}) predates container logs; restart the sandbox",
            peer.build, peer.revision
        ));
    }
    match call(&mut s, req)? {
        Response::Error { message } => Err(message),
        r => Ok(r),
    }
}

/// Asks the pod's helper to make a container's stdio FIFOs and drain them into its log.
pub fn prepare_container_io(
    socket: &Path,
    spec: &ContainerIoSpec,
    timeout: Duration,
) -> Result<ContainerIoPaths, String> {
    match io_call(socket, &Request::PrepareContainerIo(spec.clone()), timeout)? {
        Response::ContainerIo {
            stdin,
            stdout,
            stderr,
        } => Ok(ContainerIoPaths {
            stdin,
            stdout,
            stderr,
        }),
        r => Err(format!("unexpected helper answer {r:?}")),
    }
}

/// Asks the helper to reopen a container's log path (after the kubelet renamed it);
/// returns once the new file exists.
pub fn reopen_container_log(
    socket: &Path,
    container_id: &str,
    timeout: Duration,
) -> Result<(), String> {
    let req = Request::ReopenContainerLog {
        container_id: container_id.to_string(),
    };
    match io_call(socket, &req, timeout)? {
        Response::LogReopened => Ok(()),
        r => Err(format!("unexpected helper answer {r:?}")),
    }
}

/// Asks the helper to stop draining a container and remove its FIFOs (idempotent).
pub fn release_container_io(
    socket: &Path,
    container_id: &str,
    timeout: Duration,
) -> Result<(), String> {
    let req = Request::ReleaseContainerIo {
        container_id: container_id.to_string(),
    };
    match io_call(socket, &req, timeout)? {
        Response::ContainerIoReleased => Ok(()),
        r => Err(format!("unexpected helper answer {r:?}")),
    }
}

/// Hands a client connection `fd` to the pod's helper (revision ≥ 2): the
/// [`Request::ServeStream`] frame, then the fd (SCM_RIGHTS). Returns the
/// control connection, which stays open as the stream's channel (without
/// timeouts: a stream may be idle for hours).
pub fn hand_off_stream(
    socket: &Path,
    handoff: &crid_common::protocol::StreamHandoff,
    fd: &impl std::os::fd::AsRawFd,
) -> Result<UnixStream, String> {
    let (mut s, peer) = connect_with_hello(socket, Duration::from_secs(5))?;
    if peer.revision < 2 {
        return Err(format!(
            "pod helper {} (protocol revision {}) predates streaming; restart the sandbox",
            peer.build, peer.revision
        ));
    }
    write_frame_sync(&mut s, &Request::ServeStream(handoff.clone())).map_err(|e| e.to_string())?;
    crid_common::fd_pass::send_fd(&s, fd).map_err(|e| format!("passing the connection: {e}"))?;
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Opens an ExecSync output channel with the pod's helper (revision ≥ 2):
/// [`Request::ExecSyncIo`]; the connection is then that exec's channel.
/// Async, and the request goes out right behind the hello (the helper reads
/// it after answering the hello): one exchange with the helper instead of
/// two, on the path of every probe. A helper that predates exec gets a
/// request it cannot serve and is refused after its hello.
pub async fn exec_sync_channel(
    socket: &Path,
    container_id: &str,
    exec_id: &str,
    max_output: usize,
) -> Result<tokio::net::UnixStream, String> {
    let req = Request::ExecSyncIo {
        container_id: container_id.to_string(),
        exec_id: exec_id.to_string(),
        max_output,
    };
    let (s, peer) = pipelined(socket, &req).await?;
    if peer.revision < 2 {
        return Err(format!(
            "pod helper {} (protocol revision {}) predates exec; restart the sandbox",
            peer.build, peer.revision
        ));
    }
    Ok(s)
}

/// Connects to the helper and sends `req` right behind our hello (the
/// helper reads it after answering): one exchange instead of two. Returns
/// the connection and the helper's hello.
async fn pipelined(
    socket: &Path,
    req: &Request,
) -> Result<(tokio::net::UnixStream, Hello), String> {
    use crid_common::protocol::{read_frame, write_frame};
    // A local connect does not wait for the helper: it only queues on its
    // listen backlog.
    let s = crid_common::protocol::with_socket_path(socket, |p| UnixStream::connect(p))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut s = tokio::net::UnixStream::from_std(s).map_err(|e| e.to_string())?;
    let exchange = async {
        write_frame(&mut s, &Hello::ours()).await?;
        write_frame(&mut s, req).await?;
        read_frame::<_, Hello>(&mut s).await
    };
    let peer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{}: no hello from the pod helper", socket.display()))?
        .map_err(|e| e.to_string())?
        .ok_or("helper closed the connection")?;
    check_hello(&peer).map_err(|e| e.to_string())?;
    Ok((s, peer))
}

/// Asks the pod's helper (its shim) to run an ExecSync process itself
/// ([`Request::ExecSyncRun`], pipelined behind the hello like
/// [`exec_sync_channel`]); the connection then carries the run's events.
/// `Ok(None)`: the helper predates it (revision < 3) and has dropped the
/// request; the caller takes containerd's path.
pub async fn exec_sync_run(
    socket: &Path,
    run: crid_common::protocol::ExecSyncRun,
) -> Result<Option<tokio::net::UnixStream>, String> {
    let (s, peer) = pipelined(socket, &Request::ExecSyncRun(run)).await?;
    Ok((peer.revision >= 3).then_some(s))
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

/// Whether the recorded pod PID-namespace init pid is still that init.
pub fn reaper_alive(pid: u32) -> bool {
    is_live(pid, REAPER_COMM)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crid_common::protocol::PROTOCOL_REVISION;
    use std::os::unix::net::UnixListener;

    /// A fake helper answering one connection: its hello has `revision`; the
    /// request it gets is returned, `answer` is sent back.
    fn fake_helper(
        sock: &Path,
        revision: u32,
        answer: Response,
    ) -> std::thread::JoinHandle<Option<Request>> {
        let l = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let hello = Hello {
                revision,
                ..Hello::ours()
            };
            write_frame_sync(&mut s, &hello).unwrap();
            let _: Hello = read_frame_sync(&mut s).unwrap().unwrap();
            let req: Option<Request> = read_frame_sync(&mut s).unwrap();
            if req.is_some() {
                write_frame_sync(&mut s, &answer).unwrap();
            }
            req
        })
    }

    fn spec() -> ContainerIoSpec {
        ContainerIoSpec {
            container_id: "c1".into(),
            log_path: "/var/log/pods/x/c/0.log".into(),
            tty: false,
            stdin: false,
            stdin_once: false,
            max_line_bytes: None,
        }
    }

    #[test]
    fn container_io_calls_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("h.sock");
        let answer = Response::ContainerIo {
            stdin: None,
            stdout: "/io/c1/stdout".into(),
            stderr: Some("/io/c1/stderr".into()),
        };
        let t = fake_helper(&sock, PROTOCOL_REVISION, answer);
        let paths = prepare_container_io(&sock, &spec(), Duration::from_secs(5)).unwrap();
        assert_eq!(paths.stdout, Path::new("/io/c1/stdout"));
        assert_eq!(paths.stderr.as_deref(), Some(Path::new("/io/c1/stderr")));
        assert_eq!(t.join().unwrap(), Some(Request::PrepareContainerIo(spec())));

        std::fs::remove_file(&sock).unwrap();
        let t = fake_helper(
            &sock,
            PROTOCOL_REVISION,
            Response::Error {
                message: "container c1 is not running".into(),
            },
        );
        let e = reopen_container_log(&sock, "c1", Duration::from_secs(5)).unwrap_err();
        assert_eq!(e, "container c1 is not running");
        t.join().unwrap();

        std::fs::remove_file(&sock).unwrap();
        let t = fake_helper(&sock, PROTOCOL_REVISION, Response::ContainerIoReleased);
        release_container_io(&sock, "c1", Duration::from_secs(5)).unwrap();
        assert_eq!(
            t.join().unwrap(),
            Some(Request::ReleaseContainerIo {
                container_id: "c1".into()
            })
        );
    }

    #[test]
    fn an_old_helper_is_not_sent_io_requests() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("h.sock");
        let t = fake_helper(&sock, 0, Response::ContainerIoReleased);
        let e = release_container_io(&sock, "c1", Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("predates container logs"), "{e}");
        assert_eq!(t.join().unwrap(), None, "no request reached the old helper");
    }
}
