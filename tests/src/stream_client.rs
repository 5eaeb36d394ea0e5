//! A test client for crid's streaming endpoints (exec, attach,
//! port-forward), speaking what kubectl speaks: SPDY/3.1 with the
//! `channel.k8s.io` / `portforward.k8s.io` stream conventions, and WebSocket
//! with the k8s channel framing.
//!
//! Independent of the server code on purpose (this crate cannot see the
//! pod helper's modules): the few SPDY frames a client needs are encoded
//! and parsed here by hand, the SPDY/3 dictionary is spelled out here as
//! the spec prints it, and WebSocket framing and handshake come from
//! tungstenite, a separate implementation. Like kubectl's `spdystream`,
//! this client ignores WINDOW_UPDATE and never sends one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::BoxError;

/// How long the client waits for any single reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SPDY/3 header compression dictionary, as printed in the draft.
const SPDY3_DICTIONARY: &[u8] = b"\
\0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\
\0\0\0\x05trace\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\
\0\0\0\x0faccept-language\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\
\0\0\0\x0dauthorization\0\0\0\x0dcache-control\0\0\0\x0aconnection\
\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\x10content-language\
\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-md5\
\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\
\0\0\0\x06expect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-match\
\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\0\0\0\x08if-range\
\0\0\0\x13if-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\
\0\0\0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authenticate\
\0\0\0\x13proxy-authorization\0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-after\
\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\0\0\0\x11transfer-encoding\
\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\0\0\0\x07warning\
\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\
\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\
\0\0\0\x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\x06origin\
100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Status line and headers of an HTTP response.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Headers (names as sent).
    pub headers: Vec<(String, String)>,
    /// The raw head, for asserting what is (not) revealed.
    pub raw: String,
}

impl ResponseHead {
    /// First value of `name`, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim and reads the response head (byte by byte, so
/// nothing after it is consumed).
pub async fn raw_request<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    request: &[u8],
) -> Result<ResponseHead, BoxError> {
    io.write_all(request).await?;
    read_response_head(io).await
}

async fn read_response_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<ResponseHead, BoxError> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
        if r.read(&mut b).await? == 0 {
            return Err(format!(
                "connection closed in response head: {:?}",
                String::from_utf8_lossy(&head)
            )
            .into());
        }
        head.push(b[0]);
    }
    let raw = String::from_utf8(head)?;
    let mut lines = raw.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(ResponseHead {
        status,
        headers,
        raw,
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Events the client's reader task routes to one stream.
#[derive(Debug)]
enum Event {
    Reply,
    Data(Vec<u8>),
    Fin,
    Reset(u32),
}

type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

struct Writer {
    w: BoxWrite,
    z: Compress,
}

#[derive(Default)]
struct Routes {
    streams: HashMap<u32, mpsc::UnboundedSender<Event>>,
    goaway: Option<(u32, u32)>,
    closed: bool,
}

/// A SPDY/3.1 client connection (after a 101).
pub struct SpdyClient {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU32,
    pings: tokio::sync::Mutex<mpsc::UnboundedReceiver<u32>>,
    /// The protocol the server chose (`X-Stream-Protocol-Version`).
    pub protocol: Option<String>,
}

impl SpdyClient {
    /// Upgrades `io` with `POST path` offering `protocols`; fails unless 101.
    pub async fn connect<IO>(mut io: IO, path: &str, protocols: &[&str]) -> Result<Self, BoxError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
        IO: Unpin,
    {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("\r\n");
        let head = raw_request(&mut io, req.as_bytes()).await?;
        if head.status != 101 {
            return Err(format!("upgrade refused: {}", head.status).into());
        }
        if !head
            .header("Upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1"))
        {
            return Err(format!("bad upgrade response: {}", head.raw).into());
        }
        let protocol = head.header("X-Stream-Protocol-Version").map(str::to_string);
        let (r, w) = tokio::io::split(io);
        let mut z = Compress::new(Compression::new(9), true);
        z.set_dictionary(SPDY3_DICTIONARY)?;
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (ping_tx, ping_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_task(r, routes.clone(), ping_tx));
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(Writer { w: Box::pin(w), z })),
            routes,
            next_id: AtomicU32::new(1),
            pings: tokio::sync::Mutex::new(ping_rx),
            protocol,
        })
    }

    async fn write_raw(&self, bytes: &[u8]) -> Result<(), BoxError> {
        let mut w = self.writer.lock().await;
        w.w.write_all(bytes).await?;
        w.w.flush().await?;
        Ok(())
    }

    /// Writes arbitrary bytes on the connection (for garbage tests).
    pub async fn send_garbage(&self, bytes: &[u8]) -> Result<(), BoxError> {
        self.write_raw(bytes).await
    }

    /// Opens a stream with `headers` and waits for the server's SYN_REPLY.
    pub async fn open(&self, headers: &[(&str, &str)]) -> Result<ClientStream, BoxError> {
        let id = self.next_id.fetch_add(2, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .map_err(|_| "poisoned")?
            .streams
            .insert(id, tx);
        // Name/value block, then compress it with the connection's context.
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            let n = n.to_ascii_lowercase();
            block.extend_from_slice(&(n.len() as u32).to_be_bytes());
            block.extend_from_slice(n.as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        {
            let mut w = self.writer.lock().await;
            let mut z = Vec::with_capacity(block.len() + 1024);
            w.z.compress_vec(&block, &mut z, FlushCompress::Sync)?;
            let len = 10 + z.len();
            let mut f = vec![0x80, 0x03, 0x00, 0x01];
            f.extend_from_slice(&(len as u32).to_be_bytes()); // flags 0
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // assoc id, priority, slot
            f.extend_from_slice(&z);
            w.w.write_all(&f).await?;
            w.w.flush().await?;
        }
        match tokio::time::timeout(REPLY_TIMEOUT, rx.recv()).await {
            Ok(Some(Event::Reply)) => Ok(ClientStream {
                id,
                rx,
                writer: self.writer.clone(),
            }),
            Ok(Some(Event::Reset(s))) => Err(format!("stream {id} reset: status {s}").into()),
            Ok(other) => Err(format!("stream {id}: unexpected {other:?}").into()),
            Err(_) => Err(format!("stream {id}: no SYN_REPLY").into()),
        }
    }

    /// Sends PING `id` (odd: ours) and waits for its echo.
    pub async fn ping(&self, id: u32) -> Result<(), BoxError> {
        let mut f = vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4];
        f.extend_from_slice(&id.to_be_bytes());
        self.write_raw(&f).await?;
        let mut pings = self.pings.lock().await;
        loop {
            match tokio::time::timeout(REPLY_TIMEOUT, pings.recv()).await {
                Ok(Some(got)) if got == id => return Ok(()),
                Ok(Some(_)) => continue,
                _ => return Err("no PING echo".into()),
            }
        }
    }

    /// The GOAWAY received so far: (last good stream id, status).
    pub fn goaway(&self) -> Option<(u32, u32)> {
        self.routes.lock().ok()?.goaway
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.routes.lock().map(|r| r.closed).unwrap_or(true)
    }
}

async fn read_task<R: AsyncRead>(
    r: R,
    routes: Arc<Mutex<Routes>>,
    pings: mpsc::UnboundedSender<u32>,
) {
    tokio::pin!(r);
    let mut z = Decompress::new(true);
    let route = |id: u32, ev: Event| {
        if let Ok(rt) = routes.lock() {
            if let Some(tx) = rt.streams.get(&id) {
                let _ = tx.send(ev);
            }
        }
    };
    loop {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = (be32(&head[4..]) & 0x00ff_ffff) as usize;
        let flags = head[4];
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).await.is_err() {
            break;
        }
        if head[0] & 0x80 == 0 {
            let id = be32(&head) & 0x7fff_ffff;
            if !payload.is_empty() {
                route(id, Event::Data(payload));
            }
            if flags & 0x01 != 0 {
                route(id, Event::Fin);
            }
            continue;
        }
        let ty = u16::from_be_bytes([head[2], head[3]]);
        match ty {
            // SYN_REPLY and HEADERS: inflate to keep the shared context in step.
            2 | 8 if payload.len() >= 4 => {
                let id = be32(&payload) & 0x7fff_ffff;
                if inflate(&mut z, &payload[4..]).is_err() {
                    break;
                }
                if ty == 2 {
                    route(id, Event::Reply);
                }
                if flags & 0x01 != 0 {
                    route(id, Event::Fin);
                }
            }
            3 if payload.len() == 8 => route(
                be32(&payload) & 0x7fff_ffff,
                Event::Reset(be32(&payload[4..])),
            ),
            6 if payload.len() == 4 => {
                let _ = pings.send(be32(&payload));
            }
            7 if payload.len() == 8 => {
                if let Ok(mut rt) = routes.lock() {
                    rt.goaway = Some((be32(&payload), be32(&payload[4..])));
                }
            }
            // WINDOW_UPDATE, SETTINGS, anything else: ignored, as spdystream does.
            _ => {}
        }
    }
    if let Ok(mut rt) = routes.lock() {
        rt.closed = true;
        rt.streams.clear();
    }
}

fn inflate(z: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut pos = 0;
    loop {
        let before = z.total_in();
        match z.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync) {
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                pos += (z.total_in() - before) as usize;
                z.set_dictionary(SPDY3_DICTIONARY)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        pos += (z.total_in() - before) as usize;
        if pos >= input.len() {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        } else if z.total_in() == before {
            return Err("inflate stalled".into());
        }
    }
}

/// One client-opened SPDY stream.
pub struct ClientStream {
    /// Stream id.
    pub id: u32,
    rx: mpsc::UnboundedReceiver<Event>,
    writer: Arc<tokio::sync::Mutex<Writer>>,
}

impl ClientStream {
    async fn data_frame(&self, flags: u8, data: &[u8]) -> Result<(), BoxError> {
        let mut f = self.id.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(flags) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        let mut w = self.writer.lock().await;
        w.w.write_all(&f).await?;
        w.w.flush().await?;
        Ok(())
    }

    /// Sends `data` (in 32 KiB frames, like kubectl's io.Copy).
    pub async fn write(&self, data: &[u8]) -> Result<(), BoxError> {
        for chunk in data.chunks(32 * 1024) {
            self.data_frame(0, chunk).await?;
        }
        Ok(())
    }

    /// Half-closes our side (empty DATA with FLAG_FIN).
    pub async fn close_write(&self) -> Result<(), BoxError> {
        self.data_frame(0x01, &[]).await
    }

    /// Next data; `None` at the server's FIN.
    pub async fn read(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.rx.recv()).await {
            Ok(Some(Event::Data(d))) => Ok(Some(d)),
            Ok(Some(Event::Fin)) => Ok(None),
            Ok(Some(Event::Reset(s))) => Err(format!("stream {} reset: {s}", self.id).into()),
            Ok(Some(Event::Reply)) => Err("duplicate SYN_REPLY".into()),
            Ok(None) => Err("connection closed".into()),
            Err(_) => Err(format!("stream {}: read timed out", self.id).into()),
        }
    }

    /// Everything until the server's FIN.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, BoxError> {
        let mut all = Vec::new();
        while let Some(d) = self.read().await? {
            all.extend_from_slice(&d);
        }
        Ok(all)
    }
}

/// A WebSocket client speaking the k8s channel protocol.
pub struct WsClient<IO> {
    ws: WebSocketStream<IO>,
    base64: bool,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WsClient<IO> {
    /// Opens `GET path` as a WebSocket offering `protocols` (tungstenite does
    /// the handshake and checks the accept key).
    pub async fn connect(io: IO, path: &str, protocols: &[&str]) -> Result<Self, BoxError> {
        let mut req = format!("ws://localhost{path}").into_client_request()?;
        if !protocols.is_empty() {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.join(", ").parse()?);
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, io).await?;
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let base64 = protocol.as_deref().is_some_and(|p| p.contains("base64"));
        Ok(Self {
            ws,
            base64,
            protocol,
        })
    }

    /// Sends `data` on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), BoxError> {
        let msg = if self.base64 {
            let mut s = String::from(char::from(b'0' + channel));
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(s)
        } else {
            let mut v = vec![channel];
            v.extend_from_slice(data);
            Message::binary(v)
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    /// v5: tells the server `channel` (stdin) is done.
    pub async fn send_close_signal(&mut self, channel: u8) -> Result<(), BoxError> {
        self.ws.send(Message::binary(vec![255, channel])).await?;
        Ok(())
    }

    /// Sends a WebSocket ping.
    pub async fn ping(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.ws.send(Message::Ping(data.to_vec().into())).await?;
        Ok(())
    }

    /// Next channel message (channel, data); `None` when the server closed.
    /// Control messages are skipped.
    pub async fn recv(&mut self) -> Result<Option<(u8, Vec<u8>)>, BoxError> {
        loop {
            let next = tokio::time::timeout(REPLY_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| "WebSocket read timed out")?;
            let Some(msg) = next else {
                return Ok(None);
            };
            match msg? {
                Message::Binary(b) => {
                    let Some((&c, rest)) = b.split_first() else {
                        continue;
                    };
                    return Ok(Some((c, rest.to_vec())));
                }
                Message::Text(t) => {
                    let t = t.as_str();
                    let Some(c) = t.bytes().next() else {
                        continue;
                    };
                    let data = base64::engine::general_purpose::STANDARD.decode(&t[1..])?;
                    return Ok(Some((c - b'0', data)));
                }
                Message::Close(_) => return Ok(None),
                _ => continue,
            }
        }
    }

    /// Whether a pong with `data` arrives next (among control messages).
    pub async fn expect_pong(&mut self, data: &[u8]) -> Result<(), BoxError> {
        loop {
            let next = tokio::time::timeout(REPLY_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| "no pong")?
                .ok_or("closed before pong")??;
            if let Message::Pong(p) = next {
                if p.as_ref() == data {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a close frame.
    pub async fn close(&mut self) -> Result<(), BoxError> {
        self.ws.close(None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spec_size() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
    }
}
