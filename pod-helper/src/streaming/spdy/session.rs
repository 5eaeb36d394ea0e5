//! Server side of a SPDY/3.1 connection on any tokio byte stream.
//!
//! Two tasks per connection: the *reader* decodes frames, answers PINGs,
//! replies SYN_REPLY to every stream the client opens and routes DATA to the
//! stream's bounded inbound queue (a full queue stops the reader: TCP
//! backpressure); the *writer* owns the write half and the header
//! compressor and writes the frames that the reader and the stream handles
//! queue to it, in order (so a SYN_REPLY always precedes the stream's data).
//!
//! Flow control: we advertise the default 64 KiB window and send
//! WINDOW_UPDATEs (stream and session level) as the application consumes
//! data. On the sending side, windows are always accounted, but only waited
//! for once the peer shows that it does flow control (it sent a
//! WINDOW_UPDATE or a SETTINGS initial window). kubectl's `spdystream`
//! never sends WINDOW_UPDATE and ignores ours, like the kubelet's own
//! server; a server that waited for updates from it would stall after the
//! first 64 KiB of output. See [`SendFlowControl`].
//!
//! Stream ids: the client opens odd ids in increasing order; an even or
//! non-increasing id is refused with RST_STREAM PROTOCOL_ERROR. A frame that
//! does not decode ends the connection (GOAWAY PROTOCOL_ERROR): after a
//! garbage header block the shared zlib context is out of step, so nothing
//! later on the connection can be trusted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::frame::{
    goaway, rst, Frame, FrameDecoder, FrameEncoder, FLAG_FIN, FLAG_UNIDIRECTIONAL,
    SETTINGS_INITIAL_WINDOW_SIZE,
};
use super::headers::Headers;
use super::SpdyError;

/// The SPDY/3 default initial window, per stream and (3.1) per session.
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// When the sending side waits for the peer's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFlowControl {
    /// Wait once the peer has sent a WINDOW_UPDATE or SETTINGS initial
    /// window (kubectl never does: it does not flow-control).
    Auto,
    /// Always wait for the window (strict SPDY/3.1 peers).
    Always,
}

/// Tunables of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest frame payload accepted (the wire allows 16 MiB; kubectl
    /// writes at most 32 KiB per frame).
    pub max_frame_len: usize,
    /// Largest DATA payload we send in one frame.
    pub max_data_chunk: usize,
    /// Concurrent streams the client may have open; more are refused.
    pub max_streams: usize,
    /// DATA frames queued per stream before the reader stops reading.
    pub stream_queue: usize,
    /// Send-side flow-control policy.
    pub send_flow_control: SendFlowControl,
    /// Reset a stream whose peer overruns our receive window (off by
    /// default: kubectl does not respect windows).
    pub enforce_receive_window: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 1024 * 1024,
            max_data_chunk: 32 * 1024,
            max_streams: 1024,
            stream_queue: 8,
            send_flow_control: SendFlowControl::Auto,
            enforce_receive_window: false,
        }
    }
}

/// A flow-control window that writers can wait on.
struct Window {
    value: Mutex<i64>,
    notify: Notify,
}

impl Window {
    fn new(v: i64) -> Self {
        Self {
            value: Mutex::new(v),
            notify: Notify::new(),
        }
    }
    fn lock(&self) -> MutexGuard<'_, i64> {
        // A poisoned lock only means a panic elsewhere; the i64 is valid.
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Adds `delta`; false if the window would exceed 2^31-1.
    fn add(&self, delta: i64) -> bool {
        let mut v = self.lock();
        *v += delta;
        let ok = *v <= MAX_WINDOW;
        drop(v);
        self.notify.notify_waiters();
        ok
    }
}

/// Per-stream state shared by the reader task and the stream handles.
struct StreamState {
    id: u32,
    send_window: Window,
    local_closed: AtomicBool,
    remote_closed: AtomicBool,
    /// RST_STREAM status received (0 = none).
    reset: Mutex<u32>,
}

impl StreamState {
    fn reset_status(&self) -> u32 {
        *self.reset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Entry {
    inbound: Option<mpsc::Sender<Vec<u8>>>,
    state: Arc<StreamState>,
    recv_window: i64,
}

/// Connection-wide state.
struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
    session_send_window: Window,
    peer_flow_control: AtomicBool,
    initial_send_window: Mutex<i64>,
    closed: AtomicBool,
    /// Highest stream id the client opened (for GOAWAY).
    last_peer_id: AtomicU32,
    cfg: SessionConfig,
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, HashMap<u32, Entry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn waits_for_window(&self) -> bool {
        self.cfg.send_flow_control == SendFlowControl::Always
            || self.peer_flow_control.load(Ordering::Acquire)
    }
    /// Marks the connection gone and wakes every writer.
    fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        let mut streams = self.streams();
        for (_, e) in streams.drain() {
            e.state.send_window.notify.notify_waiters();
        }
        self.session_send_window.notify.notify_waiters();
    }
    /// Drops a stream once both directions are closed.
    fn maybe_forget(&self, id: u32) {
        let mut streams = self.streams();
        if let Some(e) = streams.get(&id) {
            if e.state.local_closed.load(Ordering::Acquire)
                && e.state.remote_closed.load(Ordering::Acquire)
            {
                streams.remove(&id);
            }
        }
    }
}

enum Out {
    Frame(Frame),
    /// Flush and shut the write half down.
    Close,
}

/// A server-side SPDY session; dropping it does not end the streams already
/// accepted, the connection ends when the client is gone and every stream
/// handle is dropped.
pub struct Session {
    accept: mpsc::Receiver<SpdyStream>,
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Starts the reader and writer tasks on `io` (after the HTTP upgrade).
    /// Must be called within a tokio runtime (current-thread is fine).
    pub fn start<IO>(io: IO, cfg: SessionConfig) -> Result<Self, SpdyError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let encoder = FrameEncoder::new()?;
        let (r, w) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
            session_send_window: Window::new(DEFAULT_WINDOW),
            peer_flow_control: AtomicBool::new(false),
            initial_send_window: Mutex::new(DEFAULT_WINDOW),
            closed: AtomicBool::new(false),
            last_peer_id: AtomicU32::new(0),
            cfg,
        });
        let (out_tx, out_rx) = mpsc::channel(64);
        let (accept_tx, accept_rx) = mpsc::channel(16);
        tokio::spawn(write_loop(w, out_rx, encoder, shared.clone()));
        let reader = Reader {
            shared: shared.clone(),
            out: out_tx.clone(),
            accept: Some(accept_tx),
            last_peer_id: 0,
            goaway: false,
        };
        let reader = tokio::spawn(reader.run(r));
        Ok(Self {
            accept: accept_rx,
            out: out_tx,
            shared,
            reader,
        })
    }

    /// The next stream opened by the client (already replied to), or `None`
    /// once the client can open no more (connection gone or GOAWAY).
    pub async fn accept(&mut self) -> Option<SpdyStream> {
        self.accept.recv().await
    }

    /// Tells the client we take no new streams (GOAWAY OK); open streams
    /// continue.
    pub async fn go_away(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: self.shared.last_peer_id.load(Ordering::Acquire),
                status: goaway::OK,
            }))
            .await;
    }

    /// Ends the connection as the kubelet does when the command is done:
    /// GOAWAY OK, flush what is queued, close. Streams still held fail
    /// from then on.
    pub async fn close(self) {
        self.reader.abort();
        self.go_away().await;
        let _ = self.out.send(Out::Close).await;
        self.shared.close_all();
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

struct Reader {
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    accept: Option<mpsc::Sender<SpdyStream>>,
    last_peer_id: u32,
    goaway: bool,
}

impl Reader {
    async fn run<R: AsyncRead>(mut self, r: R) {
        tokio::pin!(r);
        let mut decoder = FrameDecoder::new(self.shared.cfg.max_frame_len);
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let result: Result<(), SpdyError> = async {
            loop {
                match decoder.decode(&buf)? {
                    Some((frame, used)) => {
                        buf.drain(..used);
                        self.handle(frame).await?;
                    }
                    None => {
                        let want = decoder.needed(&buf)?.unwrap_or(4096).max(4096);
                        buf.reserve(want.saturating_sub(buf.len()));
                        if r.read_buf(&mut buf).await? == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
        .await;
        if let Err(e) = result {
            if !matches!(e, SpdyError::Io(_) | SpdyError::ConnectionClosed) {
                let _ = self
                    .out
                    .send(Out::Frame(Frame::GoAway {
                        last_good_stream_id: self.last_peer_id,
                        status: goaway::PROTOCOL_ERROR,
                    }))
                    .await;
            }
            let _ = self.out.send(Out::Close).await;
        }
        self.shared.close_all();
    }

    async fn send(&self, f: Frame) -> Result<(), SpdyError> {
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SpdyError::ConnectionClosed)
    }

    async fn reset(&self, stream_id: u32, status: u32) -> Result<(), SpdyError> {
        self.send(Frame::RstStream { stream_id, status }).await
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => self.open(stream_id, flags, headers).await,
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.data(stream_id, flags, data).await,
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    self.data(stream_id, flags, Vec::new()).await
                } else {
                    Ok(())
                }
            }
            Frame::RstStream { stream_id, status } => {
                let entry = self.shared.streams().remove(&stream_id);
                if let Some(e) = entry {
                    *e.state.reset.lock().unwrap_or_else(|p| p.into_inner()) = status.max(1);
                    e.state.send_window.notify.notify_waiters();
                }
                Ok(())
            }
            Frame::Settings { entries, .. } => {
                for s in entries {
                    if s.id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let new = i64::from(s.value);
                        if new > MAX_WINDOW {
                            return Err(SpdyError::Protocol("initial window over 2^31-1"));
                        }
                        let delta = {
                            let mut init = self
                                .shared
                                .initial_send_window
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            let d = new - *init;
                            *init = new;
                            d
                        };
                        self.shared.peer_flow_control.store(true, Ordering::Release);
                        for e in self.shared.streams().values() {
                            e.state.send_window.add(delta);
                        }
                    }
                }
                Ok(())
            }
            Frame::Ping { id } => {
                // Odd ids are the client's: echo. Even ones would be replies
                // to ours, and we send none.
                if !id.is_multiple_of(2) {
                    self.send(Frame::Ping { id }).await?;
                }
                Ok(())
            }
            Frame::GoAway { .. } => {
                self.goaway = true;
                self.accept = None;
                Ok(())
            }
            Frame::WindowUpdate { stream_id, delta } => {
                self.shared.peer_flow_control.store(true, Ordering::Release);
                if stream_id == 0 {
                    if !self.shared.session_send_window.add(i64::from(delta)) {
                        return Err(SpdyError::Protocol("session window overflow"));
                    }
                    return Ok(());
                }
                let state = self
                    .shared
                    .streams()
                    .get(&stream_id)
                    .map(|e| e.state.clone());
                if let Some(st) = state {
                    if !st.send_window.add(i64::from(delta)) {
                        self.shared.streams().remove(&stream_id);
                        *st.reset.lock().unwrap_or_else(|p| p.into_inner()) =
                            rst::FLOW_CONTROL_ERROR;
                        self.reset(stream_id, rst::FLOW_CONTROL_ERROR).await?;
                    }
                }
                Ok(())
            }
            Frame::SynReply { stream_id, .. } => {
                // We never open streams, so nothing can be replied to.
                self.reset(stream_id, rst::PROTOCOL_ERROR).await
            }
            Frame::Unknown { .. } => Ok(()),
        }
    }

    async fn open(&mut self, id: u32, flags: u8, headers: Headers) -> Result<(), SpdyError> {
        if id.is_multiple_of(2) || id <= self.last_peer_id {
            let in_use = self.shared.streams().contains_key(&id);
            let status = if in_use {
                rst::STREAM_IN_USE
            } else {
                rst::PROTOCOL_ERROR
            };
            return self.reset(id, status).await;
        }
        self.last_peer_id = id;
        self.shared.last_peer_id.store(id, Ordering::Release);
        let Some(accept) = self.accept.clone() else {
            return self.reset(id, rst::REFUSED_STREAM).await;
        };
        if self.shared.streams().len() >= self.shared.cfg.max_streams {
            return self.reset(id, rst::REFUSED_STREAM).await;
        }
        let init = *self
            .shared
            .initial_send_window
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let state = Arc::new(StreamState {
            id,
            send_window: Window::new(init),
            local_closed: AtomicBool::new(flags & FLAG_UNIDIRECTIONAL != 0),
            remote_closed: AtomicBool::new(flags & FLAG_FIN != 0),
            reset: Mutex::new(0),
        });
        let (tx, rx) = mpsc::channel(self.shared.cfg.stream_queue.max(1));
        self.shared.streams().insert(
            id,
            Entry {
                inbound: (flags & FLAG_FIN == 0).then_some(tx),
                state: state.clone(),
                recv_window: DEFAULT_WINDOW,
            },
        );
        self.send(Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: Headers::new(),
        })
        .await?;
        let stream = SpdyStream {
            headers,
            reader: StreamReader {
                state: state.clone(),
                inbound: rx,
                out: self.out.clone(),
            },
            writer: StreamWriter {
                state,
                shared: self.shared.clone(),
                out: self.out.clone(),
            },
        };
        if accept.send(stream).await.is_err() {
            // Nobody accepts any more: the stream's drop already reset it.
            self.accept = None;
        }
        Ok(())
    }

    async fn data(&mut self, id: u32, flags: u8, data: Vec<u8>) -> Result<(), SpdyError> {
        let len = data.len() as i64;
        let (tx, state, overrun) = {
            let mut streams = self.shared.streams();
            match streams.get_mut(&id) {
                None => (None, None, false),
                Some(e) => {
                    e.recv_window -= len;
                    (e.inbound.clone(), Some(e.state.clone()), e.recv_window < 0)
                }
            }
        };
        let Some(state) = state else {
            // Not open (never, or already closed both ways / reset).
            return self.reset(id, rst::INVALID_STREAM).await;
        };
        let Some(tx) = tx else {
            return self.reset(id, rst::STREAM_ALREADY_CLOSED).await;
        };
        if overrun && self.shared.cfg.enforce_receive_window {
            self.shared.streams().remove(&id);
            *state.reset.lock().unwrap_or_else(|p| p.into_inner()) = rst::FLOW_CONTROL_ERROR;
            return self.reset(id, rst::FLOW_CONTROL_ERROR).await;
        }
        if !data.is_empty() {
            // Waits while the stream's queue is full: backpressure. A reader
            // that was dropped just discards.
            let _ = tx.send(data).await;
        }
        if flags & FLAG_FIN != 0 {
            state.remote_closed.store(true, Ordering::Release);
            if let Some(e) = self.shared.streams().get_mut(&id) {
                e.inbound = None;
            }
            self.shared.maybe_forget(id);
        }
        Ok(())
    }
}

async fn write_loop<W: AsyncWrite>(
    w: W,
    mut rx: mpsc::Receiver<Out>,
    mut enc: FrameEncoder,
    shared: Arc<Shared>,
) {
    tokio::pin!(w);
    let mut buf = Vec::with_capacity(4096);
    'outer: while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        let mut close = false;
        // Batch what is already queued into one write.
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) => {
                    if enc.encode(&f, &mut buf).is_err() {
                        break 'outer;
                    }
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            break;
        }
        if close {
            break;
        }
    }
    let _ = w.shutdown().await;
    shared.close_all();
}

/// A stream opened by the client, already answered with SYN_REPLY.
pub struct SpdyStream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl SpdyStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.writer.state.id
    }
    /// The SYN_STREAM headers (`streamtype`, `port`, `requestid`...).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }
    /// Reads the next chunk; `Ok(None)` once the client half-closed.
    pub async fn read(&mut self) -> Result<Option<Vec<u8>>, SpdyError> {
        self.reader.read().await
    }
    /// Writes all of `data` (in frames of at most `max_data_chunk`).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpdyError> {
        self.writer.write(data).await
    }
    /// Half-closes our direction (DATA with FLAG_FIN).
    pub async fn close_write(&mut self) -> Result<(), SpdyError> {
        self.writer.close_write().await
    }
    /// Splits into independently usable halves.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The receiving half of a stream.
pub struct StreamReader {
    state: Arc<StreamState>,
    inbound: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Out>,
}

impl StreamReader {
    /// Reads the next chunk; `Ok(None)` once the client half-closed.
    pub async fn read(&mut self) -> Result<Option<Vec<u8>>, SpdyError> {
        match self.inbound.recv().await {
            Some(data) => {
                // Hand the consumed bytes back to the client's windows.
                let delta = data.len() as u32;
                if delta > 0 {
                    let _ = self
                        .out
                        .send(Out::Frame(Frame::WindowUpdate {
                            stream_id: self.state.id,
                            delta,
                        }))
                        .await;
                    let _ = self
                        .out
                        .send(Out::Frame(Frame::WindowUpdate {
                            stream_id: 0,
                            delta,
                        }))
                        .await;
                }
                Ok(Some(data))
            }
            None if self.state.remote_closed.load(Ordering::Acquire) => Ok(None),
            None => match self.state.reset_status() {
                0 => Err(SpdyError::ConnectionClosed),
                s => Err(SpdyError::StreamReset(s)),
            },
        }
    }
}

/// The sending half of a stream. Dropping it without `close_write` resets
/// the stream (RST_STREAM CANCEL), so an abandoned stream never lingers.
pub struct StreamWriter {
    state: Arc<StreamState>,
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    fn check(&self) -> Result<(), SpdyError> {
        match self.state.reset_status() {
            0 => {}
            s => return Err(SpdyError::StreamReset(s)),
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SpdyError::ConnectionClosed);
        }
        if self.state.local_closed.load(Ordering::Acquire) {
            return Err(SpdyError::StreamClosed);
        }
        Ok(())
    }

    /// Takes up to `want` bytes of send window (stream and session),
    /// waiting for the peer's WINDOW_UPDATE if it flow-controls.
    async fn take_window(&self, want: usize) -> Result<usize, SpdyError> {
        loop {
            self.check()?;
            let stream_wait = self.state.send_window.notify.notified();
            let session_wait = self.shared.session_send_window.notify.notified();
            tokio::pin!(stream_wait, session_wait);
            stream_wait.as_mut().enable();
            session_wait.as_mut().enable();
            let stream_blocked = {
                let mut sw = self.state.send_window.lock();
                let mut cw = self.shared.session_send_window.lock();
                let avail = (*sw).min(*cw);
                let n = if self.shared.waits_for_window() {
                    (avail.max(0) as usize).min(want)
                } else {
                    want
                };
                if n > 0 {
                    *sw -= n as i64;
                    *cw -= n as i64;
                    return Ok(n);
                }
                *sw <= 0
            };
            if stream_blocked {
                stream_wait.await;
            } else {
                session_wait.await;
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpdyError> {
        let mut rest = data;
        while !rest.is_empty() {
            let want = rest.len().min(self.shared.cfg.max_data_chunk.max(1));
            let n = self.take_window(want).await?;
            let (chunk, tail) = rest.split_at(n);
            self.out
                .send(Out::Frame(Frame::Data {
                    stream_id: self.state.id,
                    flags: 0,
                    data: chunk.to_vec(),
                }))
                .await
                .map_err(|_| SpdyError::ConnectionClosed)?;
            rest = tail;
        }
        Ok(())
    }

    /// Half-closes our direction (empty DATA with FLAG_FIN).
    pub async fn close_write(&mut self) -> Result<(), SpdyError> {
        self.check()?;
        self.state.local_closed.store(true, Ordering::Release);
        self.out
            .send(Out::Frame(Frame::Data {
                stream_id: self.state.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            }))
            .await
            .map_err(|_| SpdyError::ConnectionClosed)?;
        self.shared.maybe_forget(self.state.id);
        Ok(())
    }

    /// Aborts the stream (RST_STREAM with `status`).
    pub async fn reset(&mut self, status: u32) -> Result<(), SpdyError> {
        self.state.local_closed.store(true, Ordering::Release);
        self.state.remote_closed.store(true, Ordering::Release);
        self.shared.streams().remove(&self.state.id);
        self.out
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.state.id,
                status,
            }))
            .await
            .map_err(|_| SpdyError::ConnectionClosed)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.state.local_closed.swap(true, Ordering::AcqRel) && self.state.reset_status() == 0 {
            // The reading half, if still held, then sees a reset, not a
            // dead connection.
            *self.state.reset.lock().unwrap_or_else(|p| p.into_inner()) = rst::CANCEL;
            self.shared.streams().remove(&self.state.id);
            let _ = self.out.try_send(Out::Frame(Frame::RstStream {
                stream_id: self.state.id,
                status: rst::CANCEL,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::super::frame::{kind, Setting};
    use super::*;

    /// A raw frame-level peer for driving the session in tests.
    struct Peer {
        io: DuplexStream,
        enc: FrameEncoder,
        dec: FrameDecoder,
        buf: Vec<u8>,
    }

    impl Peer {
        async fn send(&mut self, f: Frame) {
            let mut w = Vec::new();
            self.enc.encode(&f, &mut w).unwrap();
            self.io.write_all(&w).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some((f, used)) = self.dec.decode(&self.buf).unwrap() {
                    self.buf.drain(..used);
                    return Some(f);
                }
                let read = tokio::time::timeout(
                    Duration::from_millis(300),
                    self.io.read_buf(&mut self.buf),
                )
                .await;
                match read {
                    Ok(Ok(0)) | Err(_) => return None,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("{e}"),
                }
            }
        }
        /// Next frame that is not a WINDOW_UPDATE.
        async fn recv_skip_updates(&mut self) -> Option<Frame> {
            loop {
                match self.recv().await? {
                    Frame::WindowUpdate { .. } => continue,
                    f => return Some(f),
                }
            }
        }
        async fn open(&mut self, id: u32, stream_type: &str) {
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new().with("streamType", stream_type),
            })
            .await;
        }
    }

    fn start(cfg: SessionConfig) -> (Session, Peer) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let s = Session::start(a, cfg).unwrap();
        (
            s,
            Peer {
                io: b,
                enc: FrameEncoder::new().unwrap(),
                dec: FrameDecoder::new(1 << 24),
                buf: Vec::new(),
            },
        )
    }

    #[tokio::test]
    async fn open_reply_echo_and_half_close() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.open(1, "stdin").await;
        let mut st = s.accept().await.unwrap();
        assert_eq!(st.id(), 1);
        assert_eq!(st.headers().get("streamtype"), Some("stdin"));
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                ..
            })
        ));
        p.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: b"hello".to_vec(),
        })
        .await;
        assert_eq!(st.read().await.unwrap(), Some(b"hello".to_vec()));
        // Consumed data is given back: stream then session window.
        assert_eq!(
            p.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 1,
                delta: 5
            })
        );
        assert_eq!(
            p.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 0,
                delta: 5
            })
        );
        p.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: vec![],
        })
        .await;
        assert_eq!(st.read().await.unwrap(), None);
        st.write(b"bye").await.unwrap();
        st.close_write().await.unwrap();
        assert_eq!(
            p.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: b"bye".to_vec()
            })
        );
        assert_eq!(
            p.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: vec![]
            })
        );
        assert!(matches!(st.write(b"x").await, Err(SpdyError::StreamClosed)));
    }

    #[tokio::test]
    async fn ping_is_echoed_and_bad_ids_are_reset() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.send(Frame::Ping { id: 5 }).await;
        assert_eq!(p.recv().await, Some(Frame::Ping { id: 5 }));
        p.send(Frame::Ping { id: 6 }).await; // a "reply" to nothing: ignored
        p.open(2, "stdout").await; // even: client ids are odd
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 2,
                status: rst::PROTOCOL_ERROR
            })
        );
        p.open(3, "stdout").await;
        let _st = s.accept().await.unwrap();
        assert!(matches!(p.recv().await, Some(Frame::SynReply { .. })));
        p.open(3, "stdout").await; // reused
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::STREAM_IN_USE
            })
        );
        p.open(1, "stdout").await; // not increasing
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::PROTOCOL_ERROR
            })
        );
        p.send(Frame::Data {
            stream_id: 99,
            flags: 0,
            data: b"x".to_vec(),
        })
        .await;
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 99,
                status: rst::INVALID_STREAM
            })
        );
        // Unknown control frames are ignored, the connection lives on.
        p.io.write_all(&[0x80, 3, 0, 0x0b, 0, 0, 0, 1, 0])
            .await
            .unwrap();
        p.send(Frame::Ping { id: 7 }).await;
        assert_eq!(p.recv().await, Some(Frame::Ping { id: 7 }));
    }

    #[tokio::test]
    async fn send_side_honours_windows_of_a_flow_controlling_peer() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1000,
            }],
        })
        .await;
        p.open(1, "stdout").await;
        let st = s.accept().await.unwrap();
        assert!(matches!(p.recv().await, Some(Frame::SynReply { .. })));
        let (_r, mut w) = st.into_split();
        let writer = tokio::spawn(async move {
            w.write(&[7u8; 2500]).await.unwrap();
            w.close_write().await.unwrap();
            w
        });
        let mut got = 0;
        while let Some(Frame::Data { data, .. }) = p.recv().await {
            got += data.len();
        }
        assert_eq!(got, 1000, "stopped at the window");
        p.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 1000,
        })
        .await;
        let mut more = 0;
        while let Some(Frame::Data { data, .. }) = p.recv().await {
            more += data.len();
        }
        assert_eq!(more, 1000);
        p.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 5000,
        })
        .await;
        let mut fin = false;
        while let Some(Frame::Data { data, flags, .. }) = p.recv().await {
            more += data.len();
            fin |= flags & FLAG_FIN != 0;
        }
        assert_eq!(more, 1500);
        assert!(fin);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn kubectl_style_peer_without_window_updates_is_not_stalled() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.open(1, "stdout").await;
        let mut st = s.accept().await.unwrap();
        let n = 300 * 1024; // far over the 64 KiB initial window
        let writer = tokio::spawn(async move {
            st.write(&vec![1u8; n]).await.unwrap();
            st.close_write().await.unwrap();
            st
        });
        let mut got = 0;
        loop {
            match p.recv().await {
                Some(Frame::Data { data, flags, .. }) => {
                    got += data.len();
                    assert!(data.len() <= 32 * 1024);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                Some(_) => {}
                None => panic!("stalled after {got}"),
            }
        }
        assert_eq!(got, n);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn receive_window_overrun_is_reset_when_enforced() {
        let cfg = SessionConfig {
            enforce_receive_window: true,
            ..SessionConfig::default()
        };
        let (mut s, mut p) = start(cfg);
        p.open(1, "stdin").await;
        let mut st = s.accept().await.unwrap();
        assert!(matches!(p.recv().await, Some(Frame::SynReply { .. })));
        for _ in 0..3 {
            p.send(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: vec![0; 30_000],
            })
            .await;
        }
        assert_eq!(
            p.recv_skip_updates().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::FLOW_CONTROL_ERROR
            })
        );
        let mut total = 0;
        let err = loop {
            match st.read().await {
                Ok(Some(d)) => total += d.len(),
                Ok(None) => panic!("clean end"),
                Err(e) => break e,
            }
        };
        assert_eq!(total, 60_000);
        assert!(matches!(
            err,
            SpdyError::StreamReset(rst::FLOW_CONTROL_ERROR)
        ));
    }

    #[tokio::test]
    async fn garbage_ends_the_connection_with_goaway() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.open(1, "stdin").await;
        let mut st = s.accept().await.unwrap();
        assert!(matches!(p.recv().await, Some(Frame::SynReply { .. })));
        // A SYN_STREAM whose header block is not zlib.
        p.io.write_all(&[
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9,
        ])
        .await
        .unwrap();
        assert_eq!(
            p.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::PROTOCOL_ERROR
            })
        );
        assert_eq!(p.recv().await, None, "connection closed");
        assert!(matches!(st.read().await, Err(SpdyError::ConnectionClosed)));
        assert!(s.accept().await.is_none());
        assert!(s.is_closed());
    }

    #[tokio::test]
    async fn reset_by_peer_and_dropped_streams() {
        let (mut s, mut p) = start(SessionConfig::default());
        p.open(1, "stdout").await;
        p.open(3, "stderr").await;
        let mut a = s.accept().await.unwrap();
        let b = s.accept().await.unwrap();
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply { stream_id: 3, .. })
        ));
        p.send(Frame::RstStream {
            stream_id: 1,
            status: rst::CANCEL,
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            a.write(b"x").await,
            Err(SpdyError::StreamReset(rst::CANCEL))
        ));
        let (mut b_reader, b_writer) = b.into_split();
        drop(b_writer);
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL
            })
        );
        assert!(matches!(
            b_reader.read().await,
            Err(SpdyError::StreamReset(rst::CANCEL))
        ));
        assert_eq!(kind::RST_STREAM, 3);
    }

    #[tokio::test]
    async fn too_many_streams_are_refused() {
        let cfg = SessionConfig {
            max_streams: 2,
            ..SessionConfig::default()
        };
        let (mut s, mut p) = start(cfg);
        for id in [1, 3, 5] {
            p.open(id, "data").await;
        }
        let _a = s.accept().await.unwrap();
        let _b = s.accept().await.unwrap();
        let mut refused = false;
        while let Some(f) = p.recv().await {
            if f == (Frame::RstStream {
                stream_id: 5,
                status: rst::REFUSED_STREAM,
            }) {
                refused = true;
            }
        }
        assert!(refused);
    }
}
