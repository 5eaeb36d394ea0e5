//! The daemon↔pod-helper control protocol: versioned messages, each sent as a
//! 4-byte big-endian length followed by that many bytes of JSON.
//!
//! Both sides use blocking sockets (the helper has no async runtime; crid
//! talks to helpers from blocking threads). Both exchange [`Hello`] first; a
//! peer whose version differs is refused, so a crid upgrade never silently
//! talks past an old helper.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

/// Protocol version spoken by this build; bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Additive revision within [`PROTOCOL_VERSION`]: a peer with a lower one
/// understands every message except those added later (1: container io and
/// logs; 2: stream hand-off and exec I/O; 3: ExecSync run by a helper that
/// is the pod's shim).
pub const PROTOCOL_REVISION: u32 = 3;

/// Largest frame either side accepts; bigger frames mean a confused peer.
pub const MAX_FRAME: usize = 4 << 20;

/// First message on every control connection, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Crate version of the sender, for logs.
    pub build: String,
    /// [`PROTOCOL_REVISION`] of the sender (0 when absent: a build from before revisions).
    #[serde(default)]
    pub revision: u32,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            build: env!("CARGO_PKG_VERSION").to_string(),
            revision: PROTOCOL_REVISION,
        }
    }
}

/// A broken or refused control connection.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The socket failed or closed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame over [`MAX_FRAME`].
    #[error("control frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The frame was not the JSON expected.
    #[error("control frame is not valid: {0}")]
    Decode(#[from] serde_json::Error),
    /// The peer speaks another protocol version.
    #[error("peer speaks control protocol v{peer}, this build speaks v{PROTOCOL_VERSION}")]
    Version {
        /// The peer's version.
        peer: u32,
    },
}

/// Checks a peer's hello against ours.
pub fn check_hello(peer: &Hello) -> Result<(), FrameError> {
    if peer.version != PROTOCOL_VERSION {
        return Err(FrameError::Version { peer: peer.version });
    }
    Ok(())
}

/// Writes one message as a frame on a blocking stream (the helper's side).
pub fn write_frame_sync<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: std::io::Write,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame from a blocking stream; `Ok(None)` on a clean end of stream.
pub fn read_frame_sync<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: std::io::Read,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Writes one message as a frame on an async stream (a stream's control
/// channel, which both sides drive from tokio tasks).
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame from an async stream; `Ok(None)` on a clean end of stream.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: tokio::io::AsyncRead + Unpin,
    T: DeserializeOwned,
{
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Calls `f` with a path naming unix socket `path` that fits into
/// `sockaddr_un` (108 bytes): `path` itself when short enough, otherwise
/// `/proc/self/fd/<dirfd>/<name>` through an fd of its directory, so deep
/// runtime dirs work without chdir (which would race in a threaded process).
pub fn with_socket_path<T>(
    path: &std::path::Path,
    f: impl FnOnce(&std::path::Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    const SUN_PATH_MAX: usize = 107;
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dirfd = std::fs::File::open(dir)?;
    let short = std::path::PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_raw_fd())).join(name);
    let r = f(&short);
    drop(dirfd);
    r
}

/// A request from crid to a pod helper (after the [`Hello`] exchange).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness probe; answered with [`Response::Pong`].
    Ping,
    /// End the pod: kill the pod's PID-namespace init (if any) and exit.
    /// Network teardown (CNI DEL, unpinning) is crid's job, so that it also
    /// happens when the helper is already gone.
    Shutdown,
    /// Make a container's stdio FIFOs and start draining them into its log
    /// (revision 1). Answered with [`Response::ContainerIo`].
    PrepareContainerIo(ContainerIoSpec),
    /// Reopen a container's log path after the kubelet renamed the file
    /// (revision 1). Answered with [`Response::LogReopened`] once the new
    /// file exists; every entry before the answer is in the old file.
    ReopenContainerLog {
        /// The container.
        container_id: String,
    },
    /// Stop draining a container and remove its FIFOs (revision 1; idempotent).
    /// Answered with [`Response::ContainerIoReleased`].
    ReleaseContainerIo {
        /// The container.
        container_id: String,
    },
    /// Serve a client connection crid's streaming listener accepted
    /// (revision 2). Followed on the wire by the connection's fd
    /// ([`crate::fd_pass`]); the control connection then stays open as that
    /// stream's channel ([`StreamEvent`] up, [`StreamControl`] down).
    ServeStream(StreamHandoff),
    /// Make stdout/stderr FIFOs for an ExecSync process and collect its
    /// output (revision 2). Answered with [`StreamEvent::ExecIo`]; then the
    /// connection is that exec's channel, ending with [`StreamEvent::Output`].
    ExecSyncIo {
        /// The container.
        container_id: String,
        /// The exec id (one safe path component).
        exec_id: String,
        /// Bytes kept per stream; more is read and discarded.
        max_output: usize,
    },
    /// Run an ExecSync process to its end (revision 3; only a helper that
    /// is the pod's shim): the helper starts it with the OCI runtime itself,
    /// with no containerd round trip, and collects its output. Answered on
    /// this connection with [`StreamEvent::ExecStarted`] (unless the start
    /// failed) and then [`StreamEvent::ExecSyncDone`].
    ExecSyncRun(ExecSyncRun),
}

/// What [`Request::ExecSyncRun`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSyncRun {
    /// The container.
    pub container_id: String,
    /// The exec id (one safe path component).
    pub exec_id: String,
    /// The OCI process spec (JSON text), as containerd's Exec would get it.
    pub process: String,
    /// Kill the process after this many milliseconds (0: no limit).
    pub timeout_ms: u64,
    /// Bytes kept per stream; more is read and discarded.
    pub max_output: usize,
}

/// How an ExecSync run by the helper ended (see [`Request::ExecSyncRun`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExecSyncOutcome {
    /// The process exited; `stdout_len + stderr_len` raw bytes follow.
    Exited {
        /// Its exit code (128 + signal when killed).
        exit_code: i32,
        /// Bytes of stdout that follow.
        stdout_len: usize,
        /// Bytes of stderr that follow (after stdout).
        stderr_len: usize,
    },
    /// The timeout passed; the process was killed.
    TimedOut,
    /// The OCI runtime could not start the process (its message).
    StartFailed {
        /// Why.
        message: String,
    },
    /// The helper could not run it (no such container, not running, not a
    /// shim, ...).
    Refused {
        /// Why.
        message: String,
        /// The container is unknown to the helper.
        not_found: bool,
    },
}

/// A client connection handed to the helper (see [`Request::ServeStream`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHandoff {
    /// What to serve.
    pub kind: StreamKind,
    /// The bytes crid read from the connection (request head and whatever
    /// followed it in the same reads); the helper parses the head again.
    pub head: Vec<u8>,
    /// The passed fd is a TCP socket (false: a unix socket, e.g. the plain
    /// side of crid's TLS termination).
    pub tcp: bool,
}

/// What a handed-off connection is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamKind {
    /// A new process in a container (CRI Exec).
    Exec {
        /// The container.
        container_id: String,
        /// The exec id (one safe path component).
        exec_id: String,
        /// The client's stdio choices.
        stdio: StreamStdio,
    },
    /// The container's own stdio (CRI Attach).
    Attach {
        /// The container.
        container_id: String,
        /// The client's stdio choices.
        stdio: StreamStdio,
    },
    /// TCP ports inside the pod's network namespace (CRI PortForward).
    PortForward,
}

/// Which stdio streams an exec/attach client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStdio {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr (merged into stdout with a tty).
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// Helper → crid on a stream channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The exec's FIFOs exist and are attached to the client: start the
    /// process with these as its stdio.
    ExecIo {
        /// stdin FIFO, if the client sends stdin.
        stdin: Option<std::path::PathBuf>,
        /// stdout FIFO (a tty's only output).
        stdout: Option<std::path::PathBuf>,
        /// stderr FIFO.
        stderr: Option<std::path::PathBuf>,
    },
    /// The client resized its terminal.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The client ended stdin and the helper closed its side of the stdin
    /// FIFO; crid closes the shim's (Tasks.CloseIO), so the process sees
    /// end of input.
    StdinClosed,
    /// An ExecSync run by the helper has started (revision 3).
    ExecStarted {
        /// The process's host pid.
        pid: u32,
    },
    /// An ExecSync run by the helper is over (revision 3).
    ExecSyncDone(ExecSyncOutcome),
    /// ExecSync output; `stdout_len + stderr_len` raw bytes follow the frame.
    Output {
        /// Bytes of stdout that follow.
        stdout_len: usize,
        /// Bytes of stderr that follow (after stdout).
        stderr_len: usize,
    },
    /// The stream is over (client gone, handshake refused, or done); crid
    /// ends the process if it still runs.
    Finished {
        /// Why, for crid's log.
        reason: String,
    },
}

/// crid → helper on a stream channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum StreamControl {
    /// The process runs.
    Started,
    /// The process could not be started (the runtime's message).
    StartFailed {
        /// Why.
        message: String,
    },
    /// The process exited.
    Exited {
        /// Its exit code.
        exit_code: i32,
    },
}

/// What [`Request::PrepareContainerIo`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIoSpec {
    /// The container (one safe path component).
    pub container_id: String,
    /// Absolute path of the CRI log file (created with its dir if missing).
    pub log_path: std::path::PathBuf,
    /// A TTY container has one stream (stdout), logged as stdout.
    pub tty: bool,
    /// Make a stdin FIFO, kept open by the helper for attach.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Largest content of one log entry; longer lines become `P` pieces
    /// (None: the helper's default, 16 KiB; 0: unlimited).
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
}

/// A pod helper's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The helper's pid.
        pid: u32,
    },
    /// The helper is about to exit.
    ShuttingDown,
    /// Answer to [`Request::PrepareContainerIo`]: the FIFO paths to give
    /// containerd's task as its stdio.
    ContainerIo {
        /// The stdin FIFO, if asked for.
        stdin: Option<std::path::PathBuf>,
        /// The stdout FIFO (a TTY's only stream).
        stdout: std::path::PathBuf,
        /// The stderr FIFO (None with a TTY).
        stderr: Option<std::path::PathBuf>,
    },
    /// Answer to [`Request::ReopenContainerLog`].
    LogReopened,
    /// Answer to [`Request::ReleaseContainerIo`].
    ContainerIoReleased,
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Which namespaces the helper makes for the pod (false: the host's is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnNamespaces {
    /// A network namespace (and with it a UTS namespace for the hostname).
    pub net: bool,
    /// An IPC namespace.
    pub ipc: bool,
    /// A PID namespace whose pid 1 is the helper's reaper.
    pub pid: bool,
}

/// Everything a helper needs to set up (or re-adopt) one pod; crid writes it
/// as JSON to `<sandbox dir>/helper.json` and passes the path as argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperSpec {
    /// Format version of this spec ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The sandbox id.
    pub sandbox_id: String,
    /// Leaf cgroup dirs (one per hierarchy) the helper must join first.
    pub cgroup_procs: Vec<std::path::PathBuf>,
    /// Namespaces of the pod's own.
    pub namespaces: OwnNamespaces,
    /// Dir receiving the namespace pins `net`, `ipc`, `uts`.
    pub ns_dir: std::path::PathBuf,
    /// The control socket to listen on.
    pub socket: std::path::PathBuf,
    /// Hostname set in the pod's UTS namespace (only with `namespaces.net`).
    pub hostname: String,
    /// Pod sysctls, already validated by crid.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// CNI ADD to run once the netns exists (None: no pod network).
    pub cni: Option<crate::cni_exec::CniInvocation>,
    /// Re-adopt existing pins (and the existing reaper) instead of creating.
    pub adopt: Option<Adopt>,
    /// The pod's own user namespace (CRI mode POD), which then owns its
    /// network, UTS, IPC and PID namespaces; None: the node's (mode NODE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNamespace>,
    /// Serve containerd's task API for the pod's containers (runtime
    /// `io.containerd.crid.v1`): the helper is then the pod's shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<ShimSpec>,
}

/// The helper as the pod's containerd shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The ttrpc socket containerd connects to (short enough for `sun_path`).
    pub socket: std::path::PathBuf,
    /// containerd's ttrpc address, where task events are forwarded.
    pub containerd_ttrpc: std::path::PathBuf,
    /// The containerd namespace of the pod's containers.
    pub namespace: String,
    /// ExecSync processes are started by crid-exec instead of `runc exec`
    /// (where it applies; see `pod-helper/src/shim/nativeexec.rs`).
    #[serde(default)]
    pub native_exec: bool,
}

/// One range of an id mapping, as in `/proc/<pid>/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First id inside the user namespace.
    pub container_id: u32,
    /// The host id it maps to.
    pub host_id: u32,
    /// How many consecutive ids are mapped.
    pub length: u32,
}

/// A pod's user namespace: its uid and gid mappings (checked by crid:
/// one range each, container id 0 mapped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// uid mappings.
    pub uids: Vec<IdMap>,
    /// gid mappings.
    pub gids: Vec<IdMap>,
}

impl UserNamespace {
    /// The text written to `/proc/<pid>/uid_map` (`uid: true`) or `gid_map`.
    pub fn map_text(&self, uid: bool) -> String {
        let maps = if uid { &self.uids } else { &self.gids };
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
            .collect()
    }

    /// The host uid and gid of the namespace's root (container id 0), if mapped.
    pub fn host_root(&self) -> Option<(u32, u32)> {
        fn host_of_zero(maps: &[IdMap]) -> Option<u32> {
            maps.iter()
                .find(|m| m.container_id == 0 && m.length > 0)
                .map(|m| m.host_id)
        }
        Some((host_of_zero(&self.uids)?, host_of_zero(&self.gids)?))
    }
}

/// What a restarted helper takes over from its dead predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopt {
    /// The PID-namespace init still running, if the pod has one.
    pub reaper_pid: Option<u32>,
}

/// The one JSON line a helper writes to its stdout when set-up is finished
/// (or failed); crid waits for it before reporting the sandbox ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SetupReport {
    /// Set-up done; the helper now serves its control socket.
    Ready {
        /// The helper's pid.
        pid: u32,
        /// Pid of the PID-namespace init, if any.
        reaper_pid: Option<u32>,
        /// The raw CNI result of the last plugin (for DEL's prevResult).
        cni_result: Option<serde_json::Value>,
        /// Set-up notes worth logging (e.g. a clamped oom_score_adj).
        notes: Vec<String>,
    },
    /// Set-up failed; everything the helper made is undone and it exits.
    Failed {
        /// Why, including a CNI plugin's own error.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame_sync(&mut wire, &Hello::ours()).unwrap();
        let other = Hello {
            version: 9,
            build: "x".into(),
            revision: 0,
        };
        write_frame_sync(&mut wire, &other).unwrap();
        let mut r = std::io::Cursor::new(wire);
        let first: Hello = read_frame_sync(&mut r).unwrap().unwrap();
        assert!(check_hello(&first).is_ok());
        let second: Hello = read_frame_sync(&mut r).unwrap().unwrap();
        assert!(matches!(
            check_hello(&second),
            Err(FrameError::Version { peer: 9 })
        ));
        let end: Option<Hello> = read_frame_sync(&mut r).unwrap();
        assert!(end.is_none());
    }

    #[test]
    fn exec_sync_run_and_its_outcomes_round_trip() {
        let req = Request::ExecSyncRun(ExecSyncRun {
            container_id: "c".into(),
            exec_id: "e".into(),
            process: r#"{"args":["true"]}"#.into(),
            timeout_ms: 1500,
            max_output: 16,
        });
        let events = [
            StreamEvent::ExecStarted { pid: 42 },
            StreamEvent::ExecSyncDone(ExecSyncOutcome::Exited {
                exit_code: 3,
                stdout_len: 1,
                stderr_len: 2,
            }),
            StreamEvent::ExecSyncDone(ExecSyncOutcome::TimedOut),
            StreamEvent::ExecSyncDone(ExecSyncOutcome::StartFailed {
                message: "no such file".into(),
            }),
            StreamEvent::ExecSyncDone(ExecSyncOutcome::Refused {
                message: "gone".into(),
                not_found: true,
            }),
        ];
        let mut wire = Vec::new();
        write_frame_sync(&mut wire, &req).unwrap();
        for e in &events {
            write_frame_sync(&mut wire, e).unwrap();
        }
        let mut r = std::io::Cursor::new(wire);
        assert_eq!(read_frame_sync::<_, Request>(&mut r).unwrap(), Some(req));
        for e in events {
            assert_eq!(read_frame_sync::<_, StreamEvent>(&mut r).unwrap(), Some(e));
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let mut r = std::io::Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let res: Result<Option<Hello>, _> = read_frame_sync(&mut r);
        assert!(matches!(res, Err(FrameError::TooLarge(_))));

        let mut wire = 3u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"{x}");
        let res: Result<Option<Hello>, _> = read_frame_sync(&mut std::io::Cursor::new(wire));
        assert!(matches!(res, Err(FrameError::Decode(_))));
    }

    #[test]
    fn truncated_frame_is_an_error_not_a_clean_end() {
        let mut wire = 10u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"{\"ver");
        let res: Result<Option<Hello>, _> = read_frame_sync(&mut std::io::Cursor::new(wire));
        assert!(matches!(res, Err(FrameError::Io(_))));
    }

    #[test]
    fn async_frames_match_the_sync_framing_and_stream_messages_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, &StreamControl::Exited { exit_code: 7 })
                .await
                .unwrap();
            let back: StreamControl = read_frame_sync(&mut &buf[..]).unwrap().unwrap();
            assert_eq!(back, StreamControl::Exited { exit_code: 7 });
            let again: StreamControl = read_frame(&mut &buf[..]).await.unwrap().unwrap();
            assert_eq!(again, back);
            let end: Option<StreamControl> = read_frame(&mut &[][..]).await.unwrap();
            assert!(end.is_none());
        });
        let h = Request::ServeStream(StreamHandoff {
            kind: StreamKind::Exec {
                container_id: "c".into(),
                exec_id: "e".into(),
                stdio: StreamStdio {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                    tty: true,
                },
            },
            head: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            tcp: true,
        });
        let json = serde_json::to_string(&h).unwrap();
        assert!(
            json.starts_with(r#"{"op":"serve_stream","kind":{"type":"exec""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), h);
        let ev = StreamEvent::Resize {
            width: 80,
            height: 24,
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"{"event":"resize","width":80,"height":24}"#);
    }

    #[test]
    fn long_socket_paths_are_reachable() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("helper.sock");
        assert!(sock.as_os_str().len() > 108);
        let l = with_socket_path(&sock, |p| std::os::unix::net::UnixListener::bind(p)).unwrap();
        assert!(sock.exists());
        let _c = with_socket_path(&sock, |p| std::os::unix::net::UnixStream::connect(p)).unwrap();
        assert!(l.accept().is_ok());
    }

    #[test]
    fn user_namespace_maps_and_old_specs_without_one() {
        let m = IdMap {
            container_id: 0,
            host_id: 1000,
            length: 100000,
        };
        let g = IdMap { host_id: 2000, ..m };
        let u = UserNamespace {
            uids: vec![m],
            gids: vec![g],
        };
        assert_eq!(u.map_text(true), "0 1000 100000\n");
        assert_eq!(u.map_text(false), "0 2000 100000\n");
        assert_eq!(u.host_root(), Some((1000, 2000)));
        let unmapped_root = UserNamespace {
            uids: vec![IdMap {
                container_id: 1,
                ..m
            }],
            gids: vec![g],
        };
        assert_eq!(unmapped_root.host_root(), None);
        // A spec written before user namespaces existed still reads.
        let mut v = serde_json::to_value(HelperSpec {
            version: PROTOCOL_VERSION,
            sandbox_id: "s".into(),
            cgroup_procs: vec![],
            namespaces: OwnNamespaces::default(),
            ns_dir: "/n".into(),
            socket: "/s".into(),
            hostname: String::new(),
            sysctls: Default::default(),
            cni: None,
            adopt: None,
            userns: Some(u.clone()),
            shim: Some(ShimSpec {
                socket: "/run/crid-shim/s.sock".into(),
                containerd_ttrpc: "/run/containerd/containerd.sock.ttrpc".into(),
                namespace: "crid".into(),
                native_exec: true,
            }),
        })
        .unwrap();
        let back: HelperSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.userns, Some(u));
        assert_eq!(
            back.shim.as_ref().map(|s| s.namespace.as_str()),
            Some("crid")
        );
        v.as_object_mut().unwrap().remove("userns");
        v.as_object_mut().unwrap().remove("shim");
        let old: HelperSpec = serde_json::from_value(v).unwrap();
        assert_eq!(old.userns, None);
        assert_eq!(old.shim, None);
    }

    #[test]
    fn sync_frames_and_messages_round_trip() {
        let mut buf = Vec::new();
        write_frame_sync(&mut buf, &Request::Shutdown).unwrap();
        write_frame_sync(&mut buf, &Response::Pong { pid: 7 }).unwrap();
        let mut r = &buf[..];
        let a: Request = read_frame_sync(&mut r).unwrap().unwrap();
        let b: Response = read_frame_sync(&mut r).unwrap().unwrap();
        assert_eq!(a, Request::Shutdown);
        assert_eq!(b, Response::Pong { pid: 7 });
        let end: Option<Request> = read_frame_sync(&mut r).unwrap();
        assert!(end.is_none());
        let json = serde_json::to_string(&Request::Ping).unwrap();
        assert_eq!(json, r#"{"op":"ping"}"#);
    }

    #[test]
    fn container_io_messages_round_trip_and_old_hellos_are_revision_0() {
        let req = Request::PrepareContainerIo(ContainerIoSpec {
            container_id: "c1".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            tty: false,
            stdin: true,
            stdin_once: true,
            max_line_bytes: None,
        });
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.starts_with(r#"{"op":"prepare_container_io","container_id":"c1""#));
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        // max_line_bytes may be left out.
        let short = r#"{"op":"prepare_container_io","container_id":"c","log_path":"/l","tty":true,"stdin":false,"stdin_once":false}"#;
        assert!(matches!(
            serde_json::from_str::<Request>(short).unwrap(),
            Request::PrepareContainerIo(ContainerIoSpec {
                tty: true,
                max_line_bytes: None,
                ..
            })
        ));
        let reopen = r#"{"op":"reopen_container_log","container_id":"c"}"#;
        assert_eq!(
            serde_json::from_str::<Request>(reopen).unwrap(),
            Request::ReopenContainerLog {
                container_id: "c".into()
            }
        );
        let resp = Response::ContainerIo {
            stdin: None,
            stdout: "/x/stdout".into(),
            stderr: Some("/x/stderr".into()),
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), resp);
        let old: Hello = serde_json::from_str(r#"{"version":1,"build":"0.1.0"}"#).unwrap();
        assert_eq!(old.revision, 0);
        assert!(check_hello(&old).is_ok(), "revisions are additive");
        assert_eq!(Hello::ours().revision, PROTOCOL_REVISION);
    }
}
