//! The helper's stream server: serves client connections crid's streaming
//! listener handed over (exec, attach, port-forward) and collects ExecSync
//! output. It runs on one current-thread tokio runtime, started on first
//! use, so a pod that never streams pays nothing for it.
//!
//! The helper has no containerd client: for exec it makes the FIFOs, wires
//! them to the client's streams and asks crid, over the hand-off control
//! connection, to start the process (see `crid_common::protocol`,
//! [`StreamEvent`] / [`StreamControl`]). Port-forward needs nobody: the
//! helper lives in the pod's network namespace and connects to
//! 127.0.0.1:port itself.

use super::fifos::{ExecFifos, OutFifo};
use super::http_upgrade::{
    error_response, negotiate, parse_request, switching_protocols, Endpoint, Prefixed, Request,
    Transport,
};
use super::portforward::{PairCollector, PortForwardPair};
use super::remotecommand::{
    accept_spdy_streams, error_stream_payload, ResizeDecoder, StreamOptions, TerminalSize, Version,
};
use super::spdy::session::{Session, SessionConfig, StreamReader, StreamWriter};
use super::websocket::{self, ChannelCodec, ChannelMessage, WsConfig, WsWriter};
use crid_common::protocol::{
    read_frame, write_frame, ExecSyncOutcome, ExecSyncRun, StreamControl, StreamEvent,
    StreamHandoff, StreamKind, StreamStdio,
};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// How long a SPDY exec client may take to open its streams (the kubelet's).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output is still read after the process exited (a background
/// child holding stdout open must not hold the stream forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Read size of output pumps.
const CHUNK: usize = 32 * 1024;

/// Any byte stream a client connection can be.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}
type Io = Prefixed<Box<dyn Conn>>;

/// What streams need from the rest of the helper.
pub struct Ctx {
    /// Where exec FIFOs are made (`<sandbox dir>/io/exec`).
    pub exec_dir: PathBuf,
    /// The containers' stdio (attach).
    pub io: Arc<crate::logs::container_io::ContainerIo>,
    /// Runs ExecSync processes when the helper is the pod's shim.
    pub exec_runner: Option<crate::shim::ExecRunner>,
}

/// What an exec/attach connection is for.
enum Target {
    Exec { exec_id: String },
    Attach { container_id: String },
}

/// Work handed to the stream runtime. Control-connection threads have small
/// stacks: they only send this; the futures are built on the runtime's thread.
enum Job {
    Serve(StreamHandoff, OwnedFd, std::os::unix::net::UnixStream),
    ExecSync(std::os::unix::net::UnixStream, String, usize),
    ExecSyncRun(std::os::unix::net::UnixStream, ExecSyncRun),
}

static RUNTIME: Mutex<Option<mpsc::UnboundedSender<Job>>> = Mutex::new(None);

/// Queues `job` on the stream runtime, started on first use on its own thread.
fn submit(job: Job, ctx: &Arc<Ctx>) -> Result<(), String> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let job = match slot.as_ref() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::SendError(job)) => job,
        },
        None => job,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let ctx = Arc::clone(ctx);
    std::thread::Builder::new()
        .name("streams".into())
        .stack_size(512 * 1024)
        .spawn(move || {
            // Blocking threads only start OCI runtime commands.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_stack_size(256 * 1024)
                .max_blocking_threads(4)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    crate::log(&format!("starting the stream runtime: {e}"));
                    return;
                }
            };
            rt.block_on(async move {
                while let Some(job) = rx.recv().await {
                    let ctx = Arc::clone(&ctx);
                    match job {
                        Job::Serve(h, fd, ctl) => {
                            tokio::spawn(async move {
                                if let Err(e) = serve(h, fd, ctl, &ctx).await {
                                    crate::log(&format!("stream: {e}"));
                                }
                            });
                        }
                        Job::ExecSync(ctl, exec_id, max) => {
                            tokio::spawn(async move {
                                if let Err(e) = exec_sync(ctl, &exec_id, max, &ctx).await {
                                    crate::log(&format!("exec sync {exec_id}: {e}"));
                                }
                            });
                        }
                        Job::ExecSyncRun(ctl, run) => {
                            tokio::spawn(async move {
                                let exec_id = run.exec_id.clone();
                                if let Err(e) = exec_sync_run(ctl, run, &ctx).await {
                                    crate::log(&format!("exec sync {exec_id}: {e}"));
                                }
                            });
                        }
                    }
                }
            });
        })
        .map_err(|e| format!("starting the stream thread: {e}"))?;
    tx.send(job)
        .map_err(|_| "the stream runtime did not start".to_string())?;
    *slot = Some(tx);
    Ok(())
}

/// Serves a handed-off client connection; `ctl` is its control channel.
pub fn spawn(
    h: StreamHandoff,
    fd: OwnedFd,
    ctl: std::os::unix::net::UnixStream,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    submit(Job::Serve(h, fd, ctl), &ctx)
}

/// Runs an ExecSync process and answers on `ctl` (see `Request::ExecSyncRun`).
pub fn spawn_exec_sync_run(
    ctl: std::os::unix::net::UnixStream,
    run: ExecSyncRun,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    submit(Job::ExecSyncRun(ctl, run), &ctx)
}

/// Collects an ExecSync process's output on `ctl` (see `Request::ExecSyncIo`).
pub fn spawn_exec_sync(
    ctl: std::os::unix::net::UnixStream,
    exec_id: String,
    max_output: usize,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    submit(Job::ExecSync(ctl, exec_id, max_output), &ctx)
}

fn to_tokio(s: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::UnixStream::from_std(s).map_err(|e| e.to_string())
}

/// The helper's end of a stream's control channel.
struct Ctl {
    r: OwnedReadHalf,
    w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
}

impl Ctl {
    fn new(s: std::os::unix::net::UnixStream) -> Result<Ctl, String> {
        let (r, w) = to_tokio(s)?.into_split();
        Ok(Ctl {
            r,
            w: Arc::new(tokio::sync::Mutex::new(w)),
        })
    }
    async fn send(&self, ev: &StreamEvent) -> Result<(), String> {
        write_frame(&mut *self.w.lock().await, ev)
            .await
            .map_err(|e| e.to_string())
    }
    /// Sends `ev` followed by the raw output bytes it announces.
    async fn send_with_output(
        &self,
        ev: &StreamEvent,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<(), String> {
        let mut w = self.w.lock().await;
        write_frame(&mut *w, ev).await.map_err(|e| e.to_string())?;
        w.write_all(stdout).await.map_err(|e| e.to_string())?;
        w.write_all(stderr).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }
    async fn recv(&mut self) -> Result<Option<StreamControl>, String> {
        read_frame(&mut self.r).await.map_err(|e| e.to_string())
    }
    async fn finished(&self, reason: &str) {
        let _ = self
            .send(&StreamEvent::Finished {
                reason: reason.to_string(),
            })
            .await;
    }
}

async fn serve(
    h: StreamHandoff,
    fd: OwnedFd,
    ctl: std::os::unix::net::UnixStream,
    ctx: &Ctx,
) -> Result<(), String> {
    let ctl = Ctl::new(ctl)?;
    let conn: Box<dyn Conn> = if h.tcp {
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        Box::new(tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())?)
    } else {
        Box::new(to_tokio(std::os::unix::net::UnixStream::from(fd))?)
    };
    let parsed = parse_request(&h.head).ok().flatten();
    let Some((req, len)) = parsed else {
        let mut conn = conn;
        let _ = conn.write_all(&error_response(400)).await;
        ctl.finished("malformed request").await;
        return Err("malformed request head".into());
    };
    let rest = h.head.get(len..).unwrap_or_default().to_vec();
    let mut io: Io = Prefixed::new(rest, conn);
    let endpoint = match h.kind {
        StreamKind::PortForward => Endpoint::PortForward,
        _ => Endpoint::RemoteCommand,
    };
    let neg = match negotiate(&req, endpoint) {
        Ok(n) => n,
        Err(e) => {
            let _ = io.write_all(&error_response(e.http_status())).await;
            let _ = io.shutdown().await;
            ctl.finished("upgrade refused").await;
            return Err(format!("upgrade refused: {e}"));
        }
    };
    io.write_all(&switching_protocols(&neg))
        .await
        .map_err(|e| e.to_string())?;
    let v = neg.version.unwrap_or(Version::V4);
    match (h.kind, neg.transport) {
        (StreamKind::PortForward, Transport::Spdy) => {
            drop(ctl);
            port_forward_spdy(io).await
        }
        (StreamKind::PortForward, Transport::WebSocket { base64, .. }) => {
            drop(ctl);
            port_forward_ws(io, &req, base64).await
        }
        (StreamKind::Exec { exec_id, stdio, .. }, Transport::Spdy) => {
            exec_spdy(io, ctl, ctx, Target::Exec { exec_id }, stdio, v).await
        }
        (StreamKind::Exec { exec_id, stdio, .. }, Transport::WebSocket { base64, .. }) => {
            exec_ws(io, ctl, ctx, Target::Exec { exec_id }, stdio, v, base64).await
        }
        (
            StreamKind::Attach {
                container_id,
                stdio,
            },
            Transport::Spdy,
        ) => exec_spdy(io, ctl, ctx, Target::Attach { container_id }, stdio, v).await,
        (
            StreamKind::Attach {
                container_id,
                stdio,
            },
            Transport::WebSocket { base64, .. },
        ) => {
            let t = Target::Attach { container_id };
            exec_ws(io, ctl, ctx, t, stdio, v, base64).await
        }
    }
}

// ---- port-forward ----------------------------------------------------------

async fn port_forward_spdy(io: Io) -> Result<(), String> {
    let mut session = Session::start(io, SessionConfig::default()).map_err(|e| e.to_string())?;
    let mut pairs = PairCollector::default();
    while let Some(s) = session.accept().await {
        match pairs.add(s) {
            Ok(Some(pair)) => {
                tokio::spawn(forward_pair(pair));
            }
            Ok(None) => {}
            Err(e) => crate::log(&format!("port-forward: {e}")),
        }
    }
    Ok(())
}

/// The kubelet's message when the pod's port refuses.
fn dial_error(port: u16, e: &std::io::Error) -> String {
    format!("error forwarding port {port} to pod: dial tcp 127.0.0.1:{port}: {e}")
}

async fn forward_pair(p: PortForwardPair) {
    let (mut data_r, mut data_w) = p.data.into_split();
    let (_error_r, mut error_w) = p.error.into_split();
    let tcp = match tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await {
        Ok(t) => t,
        Err(e) => {
            let _ = error_w.write(dial_error(p.port, &e).as_bytes()).await;
            let _ = error_w.close_write().await;
            let _ = data_w.close_write().await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tr, mut tw) = tcp.into_split();
    // Client → pod: on the client's half-close, half-close the TCP side.
    let up = tokio::spawn(async move {
        while let Ok(Some(d)) = data_r.read().await {
            if tw.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
        std::future::pending::<()>().await;
    });
    // Pod → client: the forward ends when the pod's side is done (as the
    // kubelet's does).
    let mut buf = vec![0u8; CHUNK];
    loop {
        match tr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if data_w.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = data_w.close_write().await;
    let _ = error_w.close_write().await;
    up.abort();
}

async fn port_forward_ws(io: Io, req: &Request, base64: bool) -> Result<(), String> {
    let mut ports = Vec::new();
    for v in req.query_values("port") {
        match v.parse::<u16>() {
            Ok(p) if p > 0 => ports.push(p),
            _ => return Err(format!("invalid port {v:?}")),
        }
    }
    let (mut reader, writer) = websocket::server(io, WsConfig::default());
    let codec = ChannelCodec {
        base64,
        close_signal: false,
    };
    if ports.is_empty() || websocket::port_forward_channels(ports.len() - 1).is_none() {
        let _ = writer.close(websocket::CLOSE_PROTOCOL_ERROR).await;
        return Err("port-forward over WebSocket needs 1 to 127 port parameters".into());
    }
    // Per port: the TCP write half (None once gone).
    let mut conns: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let Some((data_ch, err_ch)) = websocket::port_forward_channels(i) else {
            break;
        };
        for ch in [data_ch, err_ch] {
            writer
                .send(&codec.encode(ch, &websocket::port_prefix(*port)))
                .await
                .map_err(|e| e.to_string())?;
        }
        match tokio::net::TcpStream::connect(("127.0.0.1", *port)).await {
            Ok(tcp) => {
                let (mut tr, tw) = tcp.into_split();
                conns.push(Some(tw));
                let w = writer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        match tr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if w.send(&codec.encode(data_ch, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                conns.push(None);
                let msg = dial_error(*port, &e);
                let _ = writer.send(&codec.encode(err_ch, msg.as_bytes())).await;
            }
        }
    }
    while let Ok(Some(m)) = reader.recv().await {
        let Ok(Some(ChannelMessage::Data { channel, data })) = codec.decode(m) else {
            continue;
        };
        let idx = usize::from(channel / 2);
        if channel % 2 == 0 {
            if let Some(Some(tw)) = conns.get_mut(idx) {
                if tw.write_all(&data).await.is_err() {
                    conns[idx] = None;
                }
            }
        }
    }
    let _ = writer.close(websocket::CLOSE_NORMAL).await;
    Ok(())
}

// ---- exec -------------------------------------------------------------------

/// Where one kind of process output (or the final status) goes.
enum Sink {
    Spdy(StreamWriter),
    Ws {
        w: WsWriter<WriteHalf<Io>>,
        codec: ChannelCodec,
        channel: u8,
    },
}

impl Sink {
    async fn write(&mut self, d: &[u8]) -> Result<(), ()> {
        match self {
            Sink::Spdy(w) => w.write(d).await.map_err(|_| ()),
            Sink::Ws { w, codec, channel } => {
                w.send(&codec.encode(*channel, d)).await.map_err(|_| ())
            }
        }
    }
    async fn close(&mut self) {
        if let Sink::Spdy(w) = self {
            let _ = w.close_write().await;
        }
    }
}

/// The client's side of an exec, whatever the transport.
struct Client {
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    error: Sink,
    version: Version,
    /// One output stream (stdout) through a terminal.
    tty: bool,
}

fn read_spdy_stdin(mut r: StreamReader) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(Some(d)) = r.read().await {
            if tx.send(d).await.is_err() {
                break;
            }
        }
    });
    rx
}

fn read_spdy_resize(mut r: StreamReader) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut dec = ResizeDecoder::default();
        while let Ok(Some(d)) = r.read().await {
            let Ok(sizes) = dec.feed(&d) else { break };
            for s in sizes {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn exec_spdy(
    io: Io,
    ctl: Ctl,
    ctx: &Ctx,
    target: Target,
    stdio: StreamStdio,
    v: Version,
) -> Result<(), String> {
    let mut session = Session::start(io, SessionConfig::default()).map_err(|e| e.to_string())?;
    let opts = StreamOptions {
        stdin: stdio.stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
        tty: stdio.tty,
    };
    let streams = match tokio::time::timeout(
        STREAM_CREATION_TIMEOUT,
        accept_spdy_streams(&mut session, opts, v),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctl.finished("streams refused").await;
            session.close().await;
            return Err(format!("exec streams: {e}"));
        }
        Err(_) => {
            ctl.finished("streams not opened in time").await;
            session.close().await;
            return Err("exec streams not opened within 30 s".into());
        }
    };
    // Reading halves we do not use, and writing halves of client-only
    // streams, stay held until the end (dropping a writer resets the stream).
    let mut held: Vec<StreamWriter> = Vec::new();
    let split_out = |s: Option<super::spdy::session::SpdyStream>| {
        s.map(|s| {
            let (_r, w) = s.into_split();
            Sink::Spdy(w)
        })
    };
    let stdout = split_out(streams.stdout);
    let stderr = split_out(streams.stderr);
    let Some(error) = split_out(streams.error) else {
        return Err("no error stream".into());
    };
    let stdin = streams.stdin.map(|s| {
        let (r, w) = s.into_split();
        held.push(w);
        read_spdy_stdin(r)
    });
    let resize = streams.resize.map(|s| {
        let (r, w) = s.into_split();
        held.push(w);
        read_spdy_resize(r)
    });
    let client = Client {
        stdin,
        resize,
        stdout,
        stderr,
        error,
        version: v,
        tty: stdio.tty,
    };
    let gone = async {
        // Further streams are refused by dropping them; `None` means the
        // connection is gone.
        while session.accept().await.is_some() {}
    };
    let r = match &target {
        Target::Exec { exec_id } => run_exec(ctl, ctx, exec_id, client, gone).await,
        Target::Attach { container_id } => run_attach(ctl, ctx, container_id, client, gone).await,
    };
    drop(held);
    session.close().await;
    r
}

async fn exec_ws(
    io: Io,
    ctl: Ctl,
    ctx: &Ctx,
    target: Target,
    stdio: StreamStdio,
    v: Version,
    base64: bool,
) -> Result<(), String> {
    let (mut reader, writer) = websocket::server(io, WsConfig::default());
    let codec = ChannelCodec {
        base64,
        close_signal: v.close_signal(),
    };
    let sink = |channel| Sink::Ws {
        w: writer.clone(),
        codec,
        channel,
    };
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(4);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let want_resize = stdio.tty && v.has_resize();
    tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        let mut dec = ResizeDecoder::default();
        while let Ok(Some(m)) = reader.recv().await {
            match codec.decode(m) {
                Ok(Some(ChannelMessage::Data { channel: 0, data })) => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                Ok(Some(ChannelMessage::Data { channel: 4, data })) => match dec.feed(&data) {
                    Ok(sizes) => {
                        for s in sizes {
                            let _ = resize_tx.send(s).await;
                        }
                    }
                    Err(_) => break,
                },
                Ok(Some(ChannelMessage::Close { channel: 0 })) => stdin_tx = None,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = gone_tx.send(());
    });
    let client = Client {
        stdin: stdio.stdin.then_some(stdin_rx),
        resize: want_resize.then_some(resize_rx),
        stdout: stdio.stdout.then(|| sink(1)),
        stderr: (stdio.stderr && !stdio.tty).then(|| sink(2)),
        error: sink(3),
        version: v,
        tty: stdio.tty,
    };
    let gone = async {
        let _ = gone_rx.await;
    };
    let r = match &target {
        Target::Exec { exec_id } => run_exec(ctl, ctx, exec_id, client, gone).await,
        Target::Attach { container_id } => run_attach(ctl, ctx, container_id, client, gone).await,
    };
    let _ = writer.close(websocket::CLOSE_NORMAL).await;
    r
}

/// Copies an output FIFO to a sink until end of file (or the client fails);
/// without a sink (the client did not ask for that stream) the output is
/// read and discarded, so the process never blocks on it.
async fn pump_out(fifo: OutFifo, mut sink: Option<Sink>) {
    if let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_file(fifo.read) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(s) = sink.as_mut() {
                        if s.write(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Some(s) = sink.as_mut() {
        s.close().await;
    }
}

/// The transport-independent exec: FIFOs, crid starts the process, pumps,
/// status. Ends when the process exited and its output is out, or when the
/// client (`gone`) or crid goes away.
async fn run_exec(
    mut ctl: Ctl,
    ctx: &Ctx,
    exec_id: &str,
    mut client: Client,
    gone: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // containerd's shim opens every non-empty stdio path and refuses a
    // partly empty set: stdout (and stderr without a tty) always get a FIFO,
    // discarded when the client did not ask for them (as containerd's CRI).
    let mut fifos = match ExecFifos::make(
        &ctx.exec_dir,
        exec_id,
        client.stdin.is_some(),
        true,
        !client.tty,
    ) {
        Ok(f) => f,
        Err(e) => {
            fail(&mut client, &e).await;
            ctl.finished("no FIFOs").await;
            return Err(e);
        }
    };
    let (stdin, stdout, stderr) = fifos.paths();
    ctl.send(&StreamEvent::ExecIo {
        stdin,
        stdout,
        stderr,
    })
    .await?;
    match ctl.recv().await? {
        Some(StreamControl::Started) => {}
        Some(StreamControl::StartFailed { message }) => {
            fail(&mut client, &message).await;
            ctl.finished("start failed").await;
            return Ok(());
        }
        other => return Err(format!("unexpected control message {other:?}")),
    }
    fifos.drop_keepers();
    let mut pumps = Vec::new();
    if let Some(f) = fifos.stdout.take() {
        pumps.push(tokio::spawn(pump_out(f, client.stdout.take())));
    }
    if let Some(f) = fifos.stderr.take() {
        pumps.push(tokio::spawn(pump_out(f, client.stderr.take())));
    }
    let mut side_tasks = Vec::new();
    if let (Some((_, file)), Some(mut rx)) = (fifos.stdin.take(), client.stdin.take()) {
        let w = Arc::clone(&ctl.w);
        side_tasks.push(tokio::spawn(async move {
            if let Ok(mut tx) = tokio::net::unix::pipe::Sender::from_file(file) {
                while let Some(d) = rx.recv().await {
                    if tx.write_all(&d).await.is_err() {
                        break;
                    }
                }
            }
            // Our side closes here; the shim holds another writer, which
            // crid closes (Tasks.CloseIO): then the process reads EOF.
            let _ = write_frame(&mut *w.lock().await, &StreamEvent::StdinClosed).await;
        }));
    }
    if let Some(rx) = client.resize.take() {
        side_tasks.push(forward_resizes(rx, Arc::clone(&ctl.w)));
    }
    tokio::pin!(gone);
    let exit = tokio::select! {
        m = ctl.recv() => match m {
            Ok(Some(StreamControl::Exited { exit_code })) => Ok(exit_code),
            other => Err(format!("crid ended the stream: {other:?}")),
        },
        _ = &mut gone => Err("client gone".to_string()),
    };
    let code = match exit {
        Ok(c) => c,
        Err(why) => {
            ctl.finished(&why).await;
            for t in pumps.iter().chain(side_tasks.iter()) {
                t.abort();
            }
            if why != "client gone" {
                fail(&mut client, &why).await;
            }
            return Err(why);
        }
    };
    for t in side_tasks {
        t.abort();
    }
    let all_out = futures_join(pumps);
    if tokio::time::timeout(OUTPUT_GRACE, all_out).await.is_err() {
        crate::log(&format!(
            "exec {exec_id}: output still open {OUTPUT_GRACE:?} after the exit; cut"
        ));
    }
    if let Some(p) = error_stream_payload(client.version, Ok(code)) {
        let _ = client.error.write(&p).await;
    }
    client.error.close().await;
    ctl.finished("exited").await;
    Ok(())
}

/// Attach: the container's live output to the client, the client's input
/// to the container's stdin; ends when the container's output ends (then a
/// Success status) or the client goes away.
async fn run_attach(
    ctl: Ctl,
    ctx: &Ctx,
    container_id: &str,
    mut client: Client,
    gone: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let mut att = match ctx.io.attach(container_id) {
        Ok(a) => a,
        Err(e) => {
            fail(&mut client, &e).await;
            ctl.finished("no such container io").await;
            return Err(e);
        }
    };
    let mut side_tasks = Vec::new();
    // stdin_once: the container's input ends with its first attach that
    // has stdin: when the client ends stdin, or when the attach ends.
    let once = att.stdin_once && att.stdin.is_some() && client.stdin.is_some();
    let stdin_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let close_once = {
        let (w, io, cid, done) = (
            Arc::clone(&ctl.w),
            Arc::clone(&ctx.io),
            container_id.to_string(),
            Arc::clone(&stdin_closed),
        );
        move || async move {
            if once && !done.swap(true, std::sync::atomic::Ordering::AcqRel) {
                io.close_stdin(&cid);
                let _ = write_frame(&mut *w.lock().await, &StreamEvent::StdinClosed).await;
            }
        }
    };
    if let (Some(file), Some(mut rx)) = (att.stdin.take(), client.stdin.take()) {
        let close = close_once.clone();
        side_tasks.push(tokio::spawn(async move {
            if let Ok(mut tx) = tokio::net::unix::pipe::Sender::from_file(file) {
                while let Some(d) = rx.recv().await {
                    if tx.write_all(&d).await.is_err() {
                        break;
                    }
                }
            }
            close().await;
        }));
    }
    if let Some(rx) = client.resize.take() {
        side_tasks.push(forward_resizes(rx, Arc::clone(&ctl.w)));
    }
    let tty = att.tty;
    let mut stdout = client.stdout.take();
    let mut stderr = client.stderr.take();
    let pump = async {
        while let Some((stream, data)) = att.output.recv().await {
            let sink = match stream {
                crate::logs::format::Stream::Stderr if !tty => stderr.as_mut(),
                _ => stdout.as_mut(),
            };
            if let Some(s) = sink {
                if s.write(&data).await.is_err() {
                    return false;
                }
            }
        }
        true
    };
    let ended = tokio::select! {
        ok = pump => ok,
        _ = gone => false,
    };
    for t in side_tasks {
        t.abort();
    }
    close_once().await;
    if ended {
        for s in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
            s.close().await;
        }
        if let Some(p) = error_stream_payload(client.version, Ok(0)) {
            let _ = client.error.write(&p).await;
        }
        client.error.close().await;
    }
    ctl.finished(if ended { "output ended" } else { "client gone" })
        .await;
    Ok(())
}

/// Relays the client's terminal sizes to crid (which resizes the pty).
fn forward_resizes(
    mut rx: mpsc::Receiver<TerminalSize>,
    w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            let ev = StreamEvent::Resize {
                width: s.width,
                height: s.height,
            };
            if write_frame(&mut *w.lock().await, &ev).await.is_err() {
                break;
            }
        }
    })
}

/// Awaits every task (aborting the rest when dropped early).
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let mut guard = AbortOnDrop(tasks);
    for t in guard.0.iter_mut() {
        let _ = t.await;
    }
}

async fn fail(client: &mut Client, msg: &str) {
    if let Some(p) = error_stream_payload(client.version, Err(msg)) {
        let _ = client.error.write(&p).await;
    }
    client.error.close().await;
}

// ---- ExecSync ----------------------------------------------------------------

/// Reads a FIFO to end of file (or until `stop`), keeping at most `max`
/// bytes and discarding the rest, so the writer never blocks.
async fn collect(
    file: std::fs::File,
    max: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_file(file) else {
        return kept;
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            },
            _ = stop.changed() => break,
        }
    }
    kept
}

async fn exec_sync(
    ctl: std::os::unix::net::UnixStream,
    exec_id: &str,
    max_output: usize,
    ctx: &Ctx,
) -> Result<(), String> {
    let mut ctl = Ctl::new(ctl)?;
    let mut fifos = match ExecFifos::make(&ctx.exec_dir, exec_id, false, true, true) {
        Ok(f) => f,
        Err(e) => {
            ctl.finished(&e).await;
            return Err(e);
        }
    };
    let (_, stdout, stderr) = fifos.paths();
    ctl.send(&StreamEvent::ExecIo {
        stdin: None,
        stdout,
        stderr,
    })
    .await?;
    let (Some(out), Some(err)) = (fifos.stdout.as_ref(), fifos.stderr.as_ref()) else {
        return Err("exec FIFOs missing".into());
    };
    let out = out.read.try_clone().map_err(|e| e.to_string())?;
    let err = err.read.try_clone().map_err(|e| e.to_string())?;
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel();
    let outputs = tokio::spawn(collect_both(out, err, max_output, exited_rx));
    loop {
        match ctl.recv().await? {
            // The shim holds its write sides now: ours may go.
            Some(StreamControl::Started) => fifos.drop_keepers(),
            Some(StreamControl::StartFailed { .. }) | Some(StreamControl::Exited { .. }) => break,
            None => return Ok(()),
        }
    }
    fifos.drop_keepers();
    let _ = exited_tx.send(());
    let (stdout, stderr) = outputs.await.unwrap_or_default();
    let ev = StreamEvent::Output {
        stdout_len: stdout.len(),
        stderr_len: stderr.len(),
    };
    ctl.send_with_output(&ev, &stdout, &stderr).await?;
    drop(fifos);
    Ok(())
}

/// Reads both outputs until end of file, or until [`OUTPUT_GRACE`] after
/// `exited` fires (a background child may hold them open).
async fn collect_both(
    stdout: std::fs::File,
    stderr: std::fs::File,
    max: usize,
    exited: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<u8>, Vec<u8>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let out = tokio::spawn(collect(stdout, max, stop_rx.clone()));
    let err = tokio::spawn(collect(stderr, max, stop_rx));
    let stopper = tokio::spawn(async move {
        let _ = exited.await;
        tokio::time::sleep(OUTPUT_GRACE).await;
        let _ = stop_tx.send(true);
    });
    let out = out.await.unwrap_or_default();
    let err = err.await.unwrap_or_default();
    stopper.abort();
    (out, err)
}

/// ExecSync with the helper as the shim: the process is started by the OCI
/// runtime from here (no containerd call), its output read from pipes, its
/// exit from the shim's reaper; a timeout kills it.
async fn exec_sync_run(
    ctl: std::os::unix::net::UnixStream,
    run: ExecSyncRun,
    ctx: &Ctx,
) -> Result<(), String> {
    let ctl = Ctl::new(ctl)?;
    let done = |o: ExecSyncOutcome| StreamEvent::ExecSyncDone(o);
    let Some(runner) = ctx.exec_runner.clone() else {
        return ctl
            .send(&done(ExecSyncOutcome::Refused {
                message: "this pod's helper is not its shim".into(),
                not_found: false,
            }))
            .await;
    };
    let pipe = || -> Result<(std::fs::File, std::fs::File), String> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        Ok((r.into(), w.into()))
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<u32>();
    let (id, exec_id, spec) = (
        run.container_id.clone(),
        run.exec_id.clone(),
        run.process.into_bytes(),
    );
    let starter = runner.clone();
    let started = tokio::task::spawn_blocking(move || {
        let tell = Box::new(move |code: u32| {
            let _ = exit_tx.send(code);
        });
        starter.start(&id, &exec_id, &spec, out_w, err_w, tell)
    })
    .await
    .map_err(|e| format!("exec start task: {e}"))?;
    let pid = match started {
        Ok(pid) => pid,
        Err(crate::shim::ExecStartError::Refused { message, not_found }) => {
            return ctl
                .send(&done(ExecSyncOutcome::Refused { message, not_found }))
                .await
        }
        Err(crate::shim::ExecStartError::Runtime(message)) => {
            return ctl
                .send(&done(ExecSyncOutcome::StartFailed { message }))
                .await
        }
    };
    ctl.send(&StreamEvent::ExecStarted { pid }).await?;
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel();
    let outputs = tokio::spawn(collect_both(out_r, err_r, run.max_output, exited_rx));
    let mut exit_rx = exit_rx;
    let code = if run.timeout_ms > 0 {
        let limit = Duration::from_millis(run.timeout_ms);
        match tokio::time::timeout(limit, &mut exit_rx).await {
            Ok(code) => code.ok(),
            Err(_) => {
                runner.kill(pid);
                // Reaped soon after SIGKILL. Its output is not wanted: the
                // readers end by themselves within the grace period.
                let _ = tokio::time::timeout(Duration::from_secs(10), exit_rx).await;
                let _ = exited_tx.send(());
                drop(outputs);
                return ctl.send(&done(ExecSyncOutcome::TimedOut)).await;
            }
        }
    } else {
        exit_rx.await.ok()
    };
    let _ = exited_tx.send(());
    let (stdout, stderr) = outputs.await.unwrap_or_default();
    // The waiter is only dropped unheard if the helper is going down.
    let ev = done(ExecSyncOutcome::Exited {
        exit_code: code.map(|c| c as i32).unwrap_or(255),
        stdout_len: stdout.len(),
        stderr_len: stderr.len(),
    });
    ctl.send_with_output(&ev, &stdout, &stderr).await
}
