//! WebSocket (RFC 6455) server framing after our own handshake
//! (`http_upgrade`), and the Kubernetes channel framing on top of it.
//!
//! Our own small codec rather than a crate: the server side needs only
//! unmasking, fragment reassembly, ping/pong/close and size limits, and a
//! crate (tungstenite) would add its handshake, RNG and HTTP types to a
//! helper that must stay small. The test client uses tungstenite, so the
//! two sides are independent implementations.
//!
//! Channel framing (`channel.k8s.io` family): each binary message is one
//! channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize) followed by
//! the data; base64 variants send text messages whose first character is
//! the channel digit and the rest the base64 of the data. v5 adds the close
//! signal: channel 255 with one byte naming the channel the client closed
//! (stdin EOF). Port-forward uses channel pairs (2i data, 2i+1 error) per
//! requested port, and the server's first message on each channel is the
//! port number, 2 bytes little-endian.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

/// Frame opcodes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The v5 close-signal channel.
pub const CLOSE_CHANNEL: u8 = 255;

/// WebSocket and channel-framing errors.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The peer broke RFC 6455 or the channel protocol.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message over the limit.
    #[error("WebSocket message too large")]
    TooLarge,
    /// The connection is closed.
    #[error("WebSocket connection closed")]
    Closed,
    /// I/O on the underlying connection.
    #[error("WebSocket I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl WsError {
    fn close_code(&self) -> u16 {
        match self {
            WsError::TooLarge => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    /// Final fragment.
    pub fin: bool,
    /// One of [`opcode`].
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Appends a frame; `mask` is for clients (servers never mask).
pub fn encode_frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(if fin { 0x80 } else { 0 } | (op & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// Decodes one frame from the start of `buf`: `Ok(None)` if incomplete.
/// `from_client`: frames must be masked (RFC 6455 §5.1), else must not be.
pub fn decode_frame(
    buf: &[u8],
    max_payload: usize,
    from_client: bool,
) -> Result<Option<(WsFrame, usize)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let op = buf[0] & 0x0f;
    let control = op >= 0x8;
    if !matches!(op, 0x0..=0x2 | 0x8..=0xA) {
        return Err(WsError::Protocol("unknown opcode"));
    }
    let masked = buf[1] & 0x80 != 0;
    if masked != from_client {
        return Err(WsError::Protocol("wrong masking"));
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(WsError::Protocol("length MSB set"));
            }
            (l, 10)
        }
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > 125) {
        return Err(WsError::Protocol("bad control frame"));
    }
    if len > max_payload as u64 {
        return Err(WsError::TooLarge);
    }
    let len = len as usize;
    let key = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some((
        WsFrame {
            fin,
            opcode: op,
            payload,
        },
        at + len,
    )))
}

/// A complete data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text (valid UTF-8).
    Text(String),
    /// Binary.
    Binary(Vec<u8>),
}

/// What reassembly yields.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Message(Message),
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Reassembles fragmented messages, bounded by `max_message`.
struct Assembler {
    max_message: usize,
    partial: Option<(u8, Vec<u8>)>,
}

impl Assembler {
    fn push(&mut self, f: WsFrame) -> Result<Option<Event>, WsError> {
        match f.opcode {
            opcode::PING => return Ok(Some(Event::Ping(f.payload))),
            opcode::PONG => return Ok(Some(Event::Pong)),
            opcode::CLOSE => return Ok(Some(Event::Close)),
            opcode::CONTINUATION => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return Err(WsError::Protocol("continuation without a start"));
                };
                if buf.len() + f.payload.len() > self.max_message {
                    return Err(WsError::TooLarge);
                }
                buf.extend_from_slice(&f.payload);
            }
            op => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol("new message inside a fragmented one"));
                }
                self.partial = Some((op, f.payload));
            }
        }
        if !f.fin {
            return Ok(None);
        }
        let Some((op, data)) = self.partial.take() else {
            return Ok(None);
        };
        Ok(Some(Event::Message(if op == opcode::TEXT {
            Message::Text(
                String::from_utf8(data).map_err(|_| WsError::Protocol("text is not UTF-8"))?,
            )
        } else {
            Message::Binary(data)
        })))
    }
}

/// Server-side limits.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Largest frame payload accepted.
    pub max_frame: usize,
    /// Largest reassembled message accepted.
    pub max_message: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame: 1024 * 1024,
            max_message: 1024 * 1024,
        }
    }
}

/// Starts the server side of a WebSocket on `io` (after the 101).
pub fn server<IO: AsyncRead + AsyncWrite>(
    io: IO,
    cfg: WsConfig,
) -> (WsReader<IO>, WsWriter<WriteHalf<IO>>) {
    let (r, w) = tokio::io::split(io);
    let writer = WsWriter {
        inner: Arc::new(Mutex::new(WriterState { w, closed: false })),
    };
    (
        WsReader {
            r,
            buf: Vec::with_capacity(4096),
            cfg,
            asm: Assembler {
                max_message: cfg.max_message,
                partial: None,
            },
            writer: writer.clone(),
            done: false,
        },
        writer,
    )
}

/// The receiving half; answers pings and close frames itself.
pub struct WsReader<IO> {
    r: ReadHalf<IO>,
    buf: Vec<u8>,
    cfg: WsConfig,
    asm: Assembler,
    writer: WsWriter<WriteHalf<IO>>,
    done: bool,
}

impl<IO: AsyncRead + AsyncWrite> WsReader<IO> {
    /// The next data message; `Ok(None)` once the peer closed cleanly.
    /// Protocol errors close the connection with the matching code.
    pub async fn recv(&mut self) -> Result<Option<Message>, WsError> {
        if self.done {
            return Ok(None);
        }
        match self.recv_inner().await {
            Ok(m) => {
                if m.is_none() {
                    self.done = true;
                }
                Ok(m)
            }
            Err(e) => {
                self.done = true;
                let _ = self.writer.close(e.close_code()).await;
                Err(e)
            }
        }
    }

    async fn recv_inner(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            match decode_frame(&self.buf, self.cfg.max_frame, true)? {
                Some((frame, used)) => {
                    self.buf.drain(..used);
                    match self.asm.push(frame)? {
                        None | Some(Event::Pong) => {}
                        Some(Event::Ping(p)) => self.writer.send_frame(opcode::PONG, &p).await?,
                        Some(Event::Close) => {
                            let _ = self.writer.close(CLOSE_NORMAL).await;
                            return Ok(None);
                        }
                        Some(Event::Message(m)) => return Ok(Some(m)),
                    }
                }
                None => {
                    self.buf.reserve(4096);
                    if self.r.read_buf(&mut self.buf).await? == 0 {
                        // EOF without a close frame: the client vanished.
                        return Err(WsError::Closed);
                    }
                }
            }
        }
    }
}

struct WriterState<W> {
    w: W,
    closed: bool,
}

/// The sending half; cloneable (stdout and stderr pumps share it).
pub struct WsWriter<W> {
    inner: Arc<Mutex<WriterState<W>>>,
}

impl<W> Clone for WsWriter<W> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    async fn send_frame(&self, op: u8, payload: &[u8]) -> Result<(), WsError> {
        let mut st = self.inner.lock().await;
        if st.closed {
            return Err(WsError::Closed);
        }
        let mut out = Vec::with_capacity(payload.len() + 10);
        encode_frame(true, op, payload, None, &mut out);
        st.w.write_all(&out).await?;
        st.w.flush().await?;
        Ok(())
    }

    /// Sends one data message (unfragmented).
    pub async fn send(&self, m: &Message) -> Result<(), WsError> {
        match m {
            Message::Text(t) => self.send_frame(opcode::TEXT, t.as_bytes()).await,
            Message::Binary(b) => self.send_frame(opcode::BINARY, b).await,
        }
    }

    /// Sends a close frame with `code` (once) and shuts the write side down.
    pub async fn close(&self, code: u16) -> Result<(), WsError> {
        let mut st = self.inner.lock().await;
        if st.closed {
            return Ok(());
        }
        st.closed = true;
        let mut out = Vec::with_capacity(4);
        encode_frame(true, opcode::CLOSE, &code.to_be_bytes(), None, &mut out);
        st.w.write_all(&out).await?;
        st.w.shutdown().await?;
        Ok(())
    }
}

/// A message in the k8s channel protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// Data for a channel.
    Data {
        /// Channel number.
        channel: u8,
        /// Payload (decoded from base64 in the base64 variants).
        data: Vec<u8>,
    },
    /// v5 close signal: the client will send nothing more on `channel`.
    Close {
        /// The closed channel.
        channel: u8,
    },
}

/// Encoder/decoder of the channel framing for one negotiated protocol.
#[derive(Debug, Clone, Copy)]
pub struct ChannelCodec {
    /// base64 text variant.
    pub base64: bool,
    /// v5: channel 255 is the close signal.
    pub close_signal: bool,
}

impl ChannelCodec {
    /// Wraps `data` for `channel`.
    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel.min(9)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::Text(s)
        } else {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v)
        }
    }

    /// Unwraps a message; `Ok(None)` for an empty one (ignored, as the
    /// kubelet does).
    pub fn decode(&self, m: Message) -> Result<Option<ChannelMessage>, WsError> {
        let (channel, data) = match m {
            Message::Binary(b) => {
                let Some((&c, rest)) = b.split_first() else {
                    return Ok(None);
                };
                (c, rest.to_vec())
            }
            Message::Text(t) => {
                if !self.base64 {
                    return Err(WsError::Protocol("text message on a binary protocol"));
                }
                let bytes = t.as_bytes();
                let Some((&c, rest)) = bytes.split_first() else {
                    return Ok(None);
                };
                if !c.is_ascii_digit() {
                    return Err(WsError::Protocol("bad base64 channel digit"));
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| WsError::Protocol("bad base64 payload"))?;
                (c - b'0', data)
            }
        };
        if channel == CLOSE_CHANNEL && self.close_signal {
            let [closed] = data[..] else {
                return Err(WsError::Protocol("close signal needs one channel byte"));
            };
            return Ok(Some(ChannelMessage::Close { channel: closed }));
        }
        Ok(Some(ChannelMessage::Data { channel, data }))
    }
}

/// The first message the server sends on each port-forward channel.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

/// Data and error channel numbers of the `index`-th forwarded port, or
/// `None` past the 127 pairs a channel byte can address.
pub fn port_forward_channels(index: usize) -> Option<(u8, u8)> {
    let data = u8::try_from(index.checked_mul(2)?).ok()?;
    let error = data.checked_add(1)?;
    (error < CLOSE_CHANNEL).then_some((data, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, op: u8, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(fin, op, p, Some([1, 2, 3, 4]), &mut v);
        v
    }

    #[test]
    fn frame_round_trip_all_lengths() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let w = masked(true, opcode::BINARY, &p);
            let (f, used) = decode_frame(&w, 1 << 20, true).unwrap().unwrap();
            assert_eq!(used, w.len());
            assert_eq!(f.payload, p);
            for cut in [0, 1, w.len() / 2, w.len() - 1] {
                if cut < w.len() {
                    assert_eq!(decode_frame(&w[..cut], 1 << 20, true).unwrap(), None);
                }
            }
            let mut s = Vec::new();
            encode_frame(true, opcode::TEXT, &p, None, &mut s);
            let (f, _) = decode_frame(&s, 1 << 20, false).unwrap().unwrap();
            assert_eq!(f.payload, p);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        // Unmasked from a client.
        let mut v = Vec::new();
        encode_frame(true, opcode::BINARY, b"x", None, &mut v);
        assert!(decode_frame(&v, 100, true).is_err());
        // Reserved bits, unknown opcode, fragmented ping, long ping, too big.
        let mut r = masked(true, opcode::BINARY, b"x");
        r[0] |= 0x40;
        assert!(decode_frame(&r, 100, true).is_err());
        assert!(decode_frame(&masked(true, 0x3, b""), 100, true).is_err());
        assert!(decode_frame(&masked(false, opcode::PING, b""), 100, true).is_err());
        assert!(decode_frame(&masked(true, opcode::PING, &[0; 126]), 1000, true).is_err());
        assert!(matches!(
            decode_frame(&masked(true, opcode::BINARY, &[0; 101]), 100, true),
            Err(WsError::TooLarge)
        ));
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_frame(&huge, 100, true).is_err());
    }

    #[test]
    fn fragmentation_and_interleaved_control() {
        let mut a = Assembler {
            max_message: 10,
            partial: None,
        };
        let f = |fin, opcode, p: &[u8]| WsFrame {
            fin,
            opcode,
            payload: p.to_vec(),
        };
        assert_eq!(a.push(f(false, opcode::TEXT, b"he")).unwrap(), None);
        assert_eq!(
            a.push(f(true, opcode::PING, b"p")).unwrap(),
            Some(Event::Ping(b"p".to_vec()))
        );
        assert_eq!(a.push(f(false, opcode::CONTINUATION, b"ll")).unwrap(), None);
        assert_eq!(
            a.push(f(true, opcode::CONTINUATION, b"o")).unwrap(),
            Some(Event::Message(Message::Text("hello".into())))
        );
        assert!(a.push(f(true, opcode::CONTINUATION, b"x")).is_err());
        assert_eq!(a.push(f(false, opcode::BINARY, b"12345")).unwrap(), None);
        assert!(a.push(f(false, opcode::BINARY, b"x")).is_err());
        let mut b = Assembler {
            max_message: 4,
            partial: None,
        };
        b.push(f(false, opcode::BINARY, b"123")).unwrap();
        assert!(matches!(
            b.push(f(true, opcode::CONTINUATION, b"45")),
            Err(WsError::TooLarge)
        ));
        let mut c = Assembler {
            max_message: 4,
            partial: None,
        };
        assert!(c.push(f(true, opcode::TEXT, &[0xff])).is_err());
    }

    #[test]
    fn channel_codec_binary_base64_and_close() {
        let bin = ChannelCodec {
            base64: false,
            close_signal: true,
        };
        let m = bin.encode(1, b"out");
        assert_eq!(m, Message::Binary(b"\x01out".to_vec()));
        assert_eq!(
            bin.decode(m).unwrap(),
            Some(ChannelMessage::Data {
                channel: 1,
                data: b"out".to_vec()
            })
        );
        assert_eq!(
            bin.decode(Message::Binary(vec![255, 0])).unwrap(),
            Some(ChannelMessage::Close { channel: 0 })
        );
        assert!(bin.decode(Message::Binary(vec![255])).is_err());
        assert_eq!(bin.decode(Message::Binary(vec![])).unwrap(), None);
        assert!(bin.decode(Message::Text("1abc".into())).is_err());
        // Without v5, 255 is just a channel.
        let v4 = ChannelCodec {
            base64: false,
            close_signal: false,
        };
        assert!(matches!(
            v4.decode(Message::Binary(vec![255, 0])).unwrap(),
            Some(ChannelMessage::Data { channel: 255, .. })
        ));

        let b64 = ChannelCodec {
            base64: true,
            close_signal: false,
        };
        let m = b64.encode(2, b"hello");
        assert_eq!(m, Message::Text("2aGVsbG8=".into()));
        assert_eq!(
            b64.decode(m).unwrap(),
            Some(ChannelMessage::Data {
                channel: 2,
                data: b"hello".to_vec()
            })
        );
        assert!(b64.decode(Message::Text("x!!".into())).is_err());
        assert!(b64.decode(Message::Text("1!!".into())).is_err());
    }

    #[test]
    fn port_forward_helpers() {
        assert_eq!(port_prefix(8080), [0x90, 0x1f]);
        assert_eq!(port_forward_channels(0), Some((0, 1)));
        assert_eq!(port_forward_channels(3), Some((6, 7)));
        assert_eq!(port_forward_channels(127), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let buf: Vec<u8> = (0..(rnd() % 40) as usize).map(|_| rnd() as u8).collect();
            let _ = decode_frame(&buf, 1 << 16, rnd() % 2 == 0);
        }
    }
}
