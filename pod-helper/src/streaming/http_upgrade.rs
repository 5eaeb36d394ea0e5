//! The HTTP/1.1 upgrade that starts every exec / attach / port-forward
//! stream: read the request head (bounded), pick the transport (SPDY/3.1 or
//! WebSocket) and subprotocol, and answer 101 — or 400 / 404 with an empty
//! body and nothing else revealed.
//!
//! Negotiation follows the kubelet: the client's list is walked in its own
//! order and the first protocol we support wins. SPDY clients offer
//! `X-Stream-Protocol-Version` headers (one value each, or comma-joined by a
//! proxy); a SPDY client that offers none is a v1 (Kubernetes 1.0) client.
//! WebSocket clients offer `Sec-WebSocket-Protocol`; none offered means the
//! binary channel protocol without a version (pre-v4).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::remotecommand::Version;

/// Largest request head accepted (request line + headers).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused; maps to the HTTP status sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head exceeds [`MAX_REQUEST_HEAD`].
    #[error("request head too large")]
    TooLarge,
    /// Not parseable HTTP/1.1.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Neither a SPDY/3.1 nor a WebSocket upgrade, or missing headers.
    #[error("not a valid upgrade request: {0}")]
    NotUpgrade(&'static str),
    /// No protocol in common with the client.
    #[error("no supported subprotocol offered")]
    NoProtocol,
    /// The client closed before sending a full head.
    #[error("connection closed during the request")]
    Closed,
    /// I/O error while reading.
    #[error("I/O: {0}")]
    Io(String),
}

impl HandshakeError {
    /// The HTTP status to answer with (404 is for the token check, which is
    /// the caller's: everything here is a 400).
    pub fn http_status(&self) -> u16 {
        400
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method (`GET`, `POST`).
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Every value of header `name` (case-insensitive), comma-split and
    /// trimmed.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The first raw value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .iter()
            .any(|v| v.eq_ignore_ascii_case(token))
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Every value of query parameter `key` (no percent-decoding: the
    /// values used here are ports and flags).
    pub fn query_values(&self, key: &str) -> Vec<&str> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }
}

/// Parses a complete head from `buf`: `Ok(None)` if incomplete, else the
/// request and the head's length (bytes after it belong to the stream).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooLarge,
        _ => HandshakeError::Malformed("bad request head"),
    })?;
    let httparse::Status::Complete(len) = status else {
        if buf.len() >= MAX_REQUEST_HEAD {
            return Err(HandshakeError::TooLarge);
        }
        return Ok(None);
    };
    if len > MAX_REQUEST_HEAD {
        return Err(HandshakeError::TooLarge);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::Malformed("not HTTP/1.1"));
    }
    let mut out = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value)
            .map_err(|_| HandshakeError::Malformed("header value not UTF-8"))?;
        out.push((h.name.to_string(), v.to_string()));
    }
    Ok(Some((
        Request {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers: out,
        },
        len,
    )))
}

/// Reads a request head from `io`, at most [`MAX_REQUEST_HEAD`] bytes.
/// Returns the request and any bytes read past the head (to be fed to the
/// protocol before the rest of `io`).
pub async fn read_request<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<(Request, Vec<u8>), HandshakeError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| HandshakeError::Io(e.to_string()))?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((req, len)) = parse_request(&buf)? {
            return Ok((req, buf.split_off(len)));
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            return Err(HandshakeError::TooLarge);
        }
    }
}

/// A connection whose first bytes were already read with the request head:
/// replays them before reading on (writes go straight through).
pub struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The endpoint being upgraded (it decides the protocol lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// exec or attach.
    RemoteCommand,
    /// port-forward.
    PortForward,
}

/// Transport chosen for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// SPDY/3.1.
    Spdy,
    /// WebSocket (RFC 6455), with the computed `Sec-WebSocket-Accept`.
    WebSocket {
        /// Value of `Sec-WebSocket-Accept`.
        accept: String,
        /// Channel payloads are base64 text messages.
        base64: bool,
    },
}

/// The result of negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// SPDY or WebSocket.
    pub transport: Transport,
    /// The protocol name echoed to the client (`None`: none was offered).
    pub protocol: Option<&'static str>,
    /// remotecommand version (`None` for port-forward).
    pub version: Option<Version>,
}

/// SPDY remotecommand protocols, newest first.
pub const SPDY_REMOTECOMMAND: &[(&str, Version)] = &[
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];
/// SPDY port-forward protocol.
pub const SPDY_PORTFORWARD: &str = "portforward.k8s.io";
/// WebSocket remotecommand protocols: name, version, base64.
pub const WS_REMOTECOMMAND: &[(&str, Version, bool)] = &[
    ("v5.channel.k8s.io", Version::V5, false),
    ("v4.channel.k8s.io", Version::V4, false),
    ("v4.base64.channel.k8s.io", Version::V4, true),
    ("channel.k8s.io", Version::V3, false),
    ("base64.channel.k8s.io", Version::V3, true),
];
/// WebSocket port-forward protocols (the kubelet's): name, base64.
pub const WS_PORTFORWARD: &[(&str, bool)] = &[
    ("v4.channel.k8s.io", false),
    ("v4.base64.channel.k8s.io", true),
    ("portforward.k8s.io", false),
];

/// Decides transport and subprotocol for `req` on `endpoint`.
pub fn negotiate(req: &Request, endpoint: Endpoint) -> Result<Negotiated, HandshakeError> {
    if !req.has_token("Connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade("no Connection: Upgrade"));
    }
    let upgrade = req.header("Upgrade").unwrap_or("");
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return negotiate_spdy(req, endpoint);
    }
    if upgrade.eq_ignore_ascii_case("websocket") {
        return negotiate_ws(req, endpoint);
    }
    Err(HandshakeError::NotUpgrade("unsupported Upgrade"))
}

fn negotiate_spdy(req: &Request, endpoint: Endpoint) -> Result<Negotiated, HandshakeError> {
    let offered = req.header_values("X-Stream-Protocol-Version");
    match endpoint {
        Endpoint::RemoteCommand => {
            if offered.is_empty() {
                return Ok(Negotiated {
                    transport: Transport::Spdy,
                    protocol: None,
                    version: Some(Version::V1),
                });
            }
            for o in offered {
                if let Some((name, v)) = SPDY_REMOTECOMMAND.iter().find(|(n, _)| *n == o) {
                    return Ok(Negotiated {
                        transport: Transport::Spdy,
                        protocol: Some(name),
                        version: Some(*v),
                    });
                }
            }
            Err(HandshakeError::NoProtocol)
        }
        Endpoint::PortForward => {
            if offered.is_empty() || offered.contains(&SPDY_PORTFORWARD) {
                Ok(Negotiated {
                    transport: Transport::Spdy,
                    protocol: (!offered.is_empty()).then_some(SPDY_PORTFORWARD),
                    version: None,
                })
            } else {
                Err(HandshakeError::NoProtocol)
            }
        }
    }
}

fn negotiate_ws(req: &Request, endpoint: Endpoint) -> Result<Negotiated, HandshakeError> {
    if !req.method.eq_ignore_ascii_case("GET") {
        return Err(HandshakeError::NotUpgrade("WebSocket needs GET"));
    }
    if req.header("Sec-WebSocket-Version") != Some("13") {
        return Err(HandshakeError::NotUpgrade(
            "Sec-WebSocket-Version is not 13",
        ));
    }
    let key = req
        .header("Sec-WebSocket-Key")
        .ok_or(HandshakeError::NotUpgrade("no Sec-WebSocket-Key"))?;
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HandshakeError::NotUpgrade("bad Sec-WebSocket-Key")),
    }
    let accept = websocket_accept(key);
    let offered = req.header_values("Sec-WebSocket-Protocol");
    let pick = |protocol: Option<&'static str>, version, base64| Negotiated {
        transport: Transport::WebSocket {
            accept: accept.clone(),
            base64,
        },
        protocol,
        version,
    };
    if offered.is_empty() {
        return Ok(match endpoint {
            Endpoint::RemoteCommand => pick(None, Some(Version::V3), false),
            Endpoint::PortForward => pick(None, None, false),
        });
    }
    for o in offered {
        match endpoint {
            Endpoint::RemoteCommand => {
                if let Some((n, v, b)) = WS_REMOTECOMMAND.iter().find(|(n, _, _)| *n == o) {
                    return Ok(pick(Some(n), Some(*v), *b));
                }
            }
            Endpoint::PortForward => {
                if let Some((n, b)) = WS_PORTFORWARD.iter().find(|(n, _)| *n == o) {
                    return Ok(pick(Some(n), None, *b));
                }
            }
        }
    }
    Err(HandshakeError::NoProtocol)
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// The 101 response for a negotiated upgrade.
pub fn switching_protocols(n: &Negotiated) -> Vec<u8> {
    let mut r = String::from("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n");
    match &n.transport {
        Transport::Spdy => {
            r.push_str("Upgrade: SPDY/3.1\r\n");
            if let Some(p) = n.protocol {
                r.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
            }
        }
        Transport::WebSocket { accept, .. } => {
            r.push_str("Upgrade: websocket\r\n");
            r.push_str(&format!("Sec-WebSocket-Accept: {accept}\r\n"));
            if let Some(p) = n.protocol {
                r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
            }
        }
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A bodiless error response (400 or 404): nothing about the cause leaks.
pub fn error_response(status: u16) -> Vec<u8> {
    let reason = match status {
        404 => "Not Found",
        _ => "Bad Request",
    };
    let code = if status == 404 { 404 } else { 400 };
    format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> Request {
        let raw = format!("GET /exec/abc?input=1 HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_request(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn spdy_negotiation_prefers_the_clients_order() {
        let r = req("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n");
        let n = negotiate(&r, Endpoint::RemoteCommand).unwrap();
        assert_eq!(n.transport, Transport::Spdy);
        assert_eq!(n.protocol, Some("v4.channel.k8s.io"));
        assert_eq!(n.version, Some(Version::V4));
        let resp = String::from_utf8(switching_protocols(&n)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Upgrade: SPDY/3.1\r\n"));
        assert!(resp.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));

        let r = req("Connection: keep-alive, Upgrade\r\nUpgrade: spdy/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io, v2.channel.k8s.io\r\n");
        let n = negotiate(&r, Endpoint::RemoteCommand).unwrap();
        assert_eq!(n.version, Some(Version::V2));

        let r = req("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
        assert_eq!(
            negotiate(&r, Endpoint::RemoteCommand).unwrap().version,
            Some(Version::V1)
        );
        let r = req("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n");
        assert_eq!(
            negotiate(&r, Endpoint::PortForward).unwrap().protocol,
            Some("portforward.k8s.io")
        );
        assert_eq!(
            negotiate(&r, Endpoint::RemoteCommand),
            Err(HandshakeError::NoProtocol)
        );
    }

    #[test]
    fn unknown_subprotocol_is_refused() {
        let r = req("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n");
        assert_eq!(
            negotiate(&r, Endpoint::RemoteCommand),
            Err(HandshakeError::NoProtocol)
        );
        let r = req("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v9.channel.k8s.io\r\n");
        assert_eq!(
            negotiate(&r, Endpoint::RemoteCommand),
            Err(HandshakeError::NoProtocol)
        );
        let resp = String::from_utf8(error_response(400)).unwrap();
        assert_eq!(
            resp,
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert!(String::from_utf8(error_response(404))
            .unwrap()
            .starts_with("HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn websocket_negotiation() {
        // RFC 6455's own example key and accept value.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let r = req("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n");
        let n = negotiate(&r, Endpoint::RemoteCommand).unwrap();
        assert_eq!(n.protocol, Some("v5.channel.k8s.io"));
        assert_eq!(n.version, Some(Version::V5));
        let resp = String::from_utf8(switching_protocols(&n)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"));
        assert!(resp.contains("Upgrade: websocket\r\n"));

        let r = req("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.base64.channel.k8s.io\r\n");
        let n = negotiate(&r, Endpoint::RemoteCommand).unwrap();
        assert!(matches!(
            n.transport,
            Transport::WebSocket { base64: true, .. }
        ));
        let n = negotiate(&r, Endpoint::PortForward).unwrap();
        assert_eq!(n.version, None);
        assert!(matches!(
            n.transport,
            Transport::WebSocket { base64: true, .. }
        ));

        for bad in [
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        ] {
            assert!(
                negotiate(&req(bad), Endpoint::RemoteCommand).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_and_oversized_heads() {
        assert!(parse_request(b"GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.0\r\n\r\n").is_err());
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap(),
            None
        );
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() < MAX_REQUEST_HEAD + 10 {
            big.extend_from_slice(
                b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(parse_request(&big), Err(HandshakeError::TooLarge));
        let mut long_line = b"GET /".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD + 1));
        assert_eq!(parse_request(&long_line), Err(HandshakeError::TooLarge));
    }

    #[test]
    fn query_and_path() {
        let r = req("");
        assert_eq!(r.path(), "/exec/abc");
        assert_eq!(r.query_values("input"), vec!["1"]);
        let r = parse_request(b"GET /pf/t?port=80&port=443 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(r.query_values("port"), vec!["80", "443"]);
    }

    #[tokio::test]
    async fn read_request_keeps_bytes_after_the_head() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            b.write_all(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\nEXTRA")
                .await
                .unwrap();
            b
        });
        let (r, rest) = read_request(&mut a).await.unwrap();
        assert_eq!(r.method, "GET");
        let _b = w.await.unwrap();
        assert_eq!(rest, b"EXTRA");
        let (mut c, d) = tokio::io::duplex(64);
        drop(d);
        assert_eq!(read_request(&mut c).await, Err(HandshakeError::Closed));
        let (mut e, mut f) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = f.write_all(&vec![b'a'; MAX_REQUEST_HEAD * 2]).await;
            f
        });
        assert!(read_request(&mut e).await.is_err());
    }
}
