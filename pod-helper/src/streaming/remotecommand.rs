//! The remotecommand protocol (exec / attach) semantics shared by SPDY and
//! WebSocket, as the kubelet's streaming server implements them:
//!
//! | version | SPDY `X-Stream-Protocol-Version` | WebSocket subprotocol | streams |
//! | --- | --- | --- | --- |
//! | 1 | `channel.k8s.io` | — | error, stdin, stdout, stderr; error is plain text |
//! | 2 | `v2.channel.k8s.io` | — | same as 1 (fixed stdin half-close) |
//! | 3 | `v3.channel.k8s.io` | `channel.k8s.io`, `base64.channel.k8s.io`, none | + resize |
//! | 4 | `v4.channel.k8s.io` | `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` | error carries a metav1 Status JSON |
//! | 5 | — | `v5.channel.k8s.io` | + close signal (channel 255) |
//!
//! The error stream carries, when the process ends: nothing (v1-v3 success),
//! the error text (v1-v3 failure), or a Status JSON (v4+): `{"metadata":{},
//! "status":"Success"}`, or `"Failure"` with reason `NonZeroExitCode` and the
//! exit code as the message of a cause of reason `ExitCode` (what kubectl
//! parses to exit with the same code). Resize messages are a sequence of
//! `{"Width":w,"Height":h}` JSON objects.

use serde::{Deserialize, Serialize};

use super::spdy::session::{Session, SpdyStream};

/// Protocol version of an exec/attach stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io` over SPDY.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io` (and pre-v4 WebSocket).
    V3,
    /// `v4.channel.k8s.io`.
    V4,
    /// `v5.channel.k8s.io` (WebSocket only).
    V5,
}

impl Version {
    /// Whether a resize stream/channel exists (v3+).
    pub fn has_resize(self) -> bool {
        self >= Version::V3
    }
    /// Whether the error stream carries a Status JSON (v4+), else text.
    pub fn status_json(self) -> bool {
        self >= Version::V4
    }
    /// Whether the client may half-close stdin with channel 255 (v5).
    pub fn close_signal(self) -> bool {
        self >= Version::V5
    }
}

/// The role of a stream, from SPDY's `streamtype` header or a channel number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamRole {
    /// Client to process.
    Stdin,
    /// Process to client.
    Stdout,
    /// Process to client (absent with a tty).
    Stderr,
    /// Final status, process to client.
    Error,
    /// Terminal size updates, client to server.
    Resize,
}

impl StreamRole {
    /// Parses the SPDY `streamtype` header value.
    pub fn from_stream_type(v: &str) -> Option<Self> {
        Some(match v {
            "stdin" => Self::Stdin,
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            "error" => Self::Error,
            "resize" => Self::Resize,
            _ => return None,
        })
    }

    /// The WebSocket channel number.
    pub fn channel(self) -> u8 {
        match self {
            Self::Stdin => 0,
            Self::Stdout => 1,
            Self::Stderr => 2,
            Self::Error => 3,
            Self::Resize => 4,
        }
    }

    /// The role of a WebSocket channel number.
    pub fn from_channel(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Stdin,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Error,
            4 => Self::Resize,
            _ => return None,
        })
    }
}

/// What the client asked to attach (from the CRI Exec/Attach request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// stdin requested.
    pub stdin: bool,
    /// stdout requested.
    pub stdout: bool,
    /// stderr requested (ignored with tty: merged into stdout).
    pub stderr: bool,
    /// tty requested.
    pub tty: bool,
}

impl StreamOptions {
    /// The SPDY streams the client opens and the server waits for before
    /// starting the process, as the kubelet counts them.
    pub fn expected_streams(&self, v: Version) -> Vec<StreamRole> {
        let mut s = vec![StreamRole::Error];
        if self.stdin {
            s.push(StreamRole::Stdin);
        }
        if self.stdout {
            s.push(StreamRole::Stdout);
        }
        if self.stderr && !self.tty {
            s.push(StreamRole::Stderr);
        }
        if self.tty && v.has_resize() {
            s.push(StreamRole::Resize);
        }
        s
    }
}

/// metav1.StatusCause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Machine-readable cause (`ExitCode`).
    #[serde(rename = "reason", default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail (the exit code in decimal for `ExitCode`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// metav1.StatusDetails (only what the error stream uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// Causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// Empty metav1.ListMeta, which Go always marshals as `"metadata":{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {}

/// metav1.Status as the v4+ error stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Always present (empty).
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Success` or `Failure`.
    pub status: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable reason (`NonZeroExitCode`, `InternalError`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// HTTP-like code (500 for internal errors; absent otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// Reason of a non-zero exit.
pub const REASON_NON_ZERO_EXIT: &str = "NonZeroExitCode";
/// Cause reason carrying the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";

impl Status {
    /// The process exited 0.
    pub fn success() -> Self {
        Self {
            metadata: ListMeta {},
            status: "Success".into(),
            message: String::new(),
            reason: String::new(),
            details: None,
            code: 0,
        }
    }

    /// The process exited with `code` != 0.
    pub fn exit_code(code: i32) -> Self {
        Self {
            metadata: ListMeta {},
            status: "Failure".into(),
            message: format!("command terminated with non-zero exit code: exit status {code}"),
            reason: REASON_NON_ZERO_EXIT.into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: CAUSE_EXIT_CODE.into(),
                    message: code.to_string(),
                }],
            }),
            code: 0,
        }
    }

    /// The stream could not be served (e.g. the process did not start).
    pub fn internal_error(msg: &str) -> Self {
        Self {
            metadata: ListMeta {},
            status: "Failure".into(),
            message: format!("Internal error occurred: {msg}"),
            reason: "InternalError".into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: String::new(),
                    message: msg.into(),
                }],
            }),
            code: 500,
        }
    }

    /// The exit code this status reports (0 for success), as kubectl reads it.
    pub fn reported_exit_code(&self) -> Option<i32> {
        if self.status == "Success" {
            return Some(0);
        }
        if self.reason != REASON_NON_ZERO_EXIT {
            return None;
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason == CAUSE_EXIT_CODE)?
            .message
            .parse()
            .ok()
    }
}

/// What to write on the error stream when the process ended with `exit_code`
/// (or failed with `error`), for protocol version `v`. `None`: write nothing.
pub fn error_stream_payload(v: Version, result: Result<i32, &str>) -> Option<Vec<u8>> {
    let status = match result {
        Ok(0) => Status::success(),
        Ok(code) => Status::exit_code(code),
        Err(msg) => Status::internal_error(msg),
    };
    if v.status_json() {
        // Serializing this plain struct cannot fail.
        serde_json::to_vec(&status).ok()
    } else {
        match result {
            Ok(0) => None,
            Ok(code) => Some(format!("command terminated with exit code {code}").into_bytes()),
            Err(msg) => Some(msg.as_bytes().to_vec()),
        }
    }
}

/// A terminal size update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Cap of buffered, not yet complete resize JSON.
const MAX_RESIZE_PENDING: usize = 4096;

/// Incremental decoder for the resize stream: a sequence of JSON objects
/// that may be split across frames or share one.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

/// A resize stream that is not a sequence of TerminalSize objects.
#[derive(Debug, thiserror::Error)]
#[error("invalid resize message: {0}")]
pub struct ResizeError(String);

impl ResizeDecoder {
    /// Feeds bytes; returns the complete sizes they finish.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        {
            let mut it =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
            loop {
                match it.next() {
                    Some(Ok(sz)) => {
                        out.push(sz);
                        consumed = it.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(ResizeError(e.to_string())),
                    None => {
                        consumed = it.byte_offset();
                        break;
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_RESIZE_PENDING {
            return Err(ResizeError("message too long".into()));
        }
        Ok(out)
    }
}

/// The SPDY streams of one exec / attach, by role.
#[derive(Default)]
pub struct SpdyExecStreams {
    /// Error stream (always).
    pub error: Option<SpdyStream>,
    /// stdin, if requested.
    pub stdin: Option<SpdyStream>,
    /// stdout, if requested.
    pub stdout: Option<SpdyStream>,
    /// stderr, if requested and no tty.
    pub stderr: Option<SpdyStream>,
    /// resize, with a tty from v3 on.
    pub resize: Option<SpdyStream>,
}

impl SpdyExecStreams {
    fn slot(&mut self, role: StreamRole) -> &mut Option<SpdyStream> {
        match role {
            StreamRole::Error => &mut self.error,
            StreamRole::Stdin => &mut self.stdin,
            StreamRole::Stdout => &mut self.stdout,
            StreamRole::Stderr => &mut self.stderr,
            StreamRole::Resize => &mut self.resize,
        }
    }
}

/// Why the exec streams could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The client went away (or sent GOAWAY) first.
    #[error("connection closed before all streams were opened")]
    Closed,
    /// A `streamtype` we do not know.
    #[error("unexpected stream type {0:?}")]
    UnexpectedStream(String),
    /// Two streams of one role.
    #[error("duplicate {0:?} stream")]
    Duplicate(StreamRole),
}

/// Accepts the client's streams until every one `opts` requires for
/// version `v` is open, as the kubelet does before starting the process
/// (the caller bounds the wait: the kubelet gives up after 30 s).
pub async fn accept_spdy_streams(
    session: &mut Session,
    opts: StreamOptions,
    v: Version,
) -> Result<SpdyExecStreams, AcceptError> {
    let expected = opts.expected_streams(v);
    let mut got = SpdyExecStreams::default();
    while !expected.iter().all(|r| got.slot(*r).is_some()) {
        let stream = session.accept().await.ok_or(AcceptError::Closed)?;
        let ty = stream.headers().get("streamtype").unwrap_or("").to_string();
        let role = StreamRole::from_stream_type(&ty).ok_or(AcceptError::UnexpectedStream(ty))?;
        let slot = got.slot(role);
        if slot.is_some() {
            return Err(AcceptError::Duplicate(role));
        }
        *slot = Some(stream);
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_is_what_the_kubelet_writes() {
        let v = error_stream_payload(Version::V4, Ok(0)).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(error_stream_payload(Version::V3, Ok(0)), None);
    }

    #[test]
    fn exit_code_status() {
        let v = error_stream_payload(Version::V4, Ok(7)).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["status"], "Failure");
        assert_eq!(j["reason"], "NonZeroExitCode");
        assert_eq!(j["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(j["details"]["causes"][0]["message"], "7");
        assert_eq!(j["metadata"], serde_json::json!({}));
        let s: Status = serde_json::from_slice(&v).unwrap();
        assert_eq!(s.reported_exit_code(), Some(7));
        assert_eq!(Status::success().reported_exit_code(), Some(0));
        assert_eq!(Status::internal_error("x").reported_exit_code(), None);
        let text = error_stream_payload(Version::V2, Ok(3)).unwrap();
        assert!(String::from_utf8(text).unwrap().contains('3'));
    }

    #[test]
    fn expected_streams_per_version() {
        let o = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        assert_eq!(
            o.expected_streams(Version::V4),
            vec![
                StreamRole::Error,
                StreamRole::Stdin,
                StreamRole::Stdout,
                StreamRole::Resize
            ]
        );
        assert_eq!(o.expected_streams(Version::V2).len(), 3);
        let no_tty = StreamOptions { tty: false, ..o };
        assert!(no_tty
            .expected_streams(Version::V4)
            .contains(&StreamRole::Stderr));
    }

    #[test]
    fn roles_and_channels() {
        for c in 0..5 {
            assert_eq!(StreamRole::from_channel(c).unwrap().channel(), c);
        }
        assert_eq!(StreamRole::from_channel(5), None);
        assert_eq!(
            StreamRole::from_stream_type("resize"),
            Some(StreamRole::Resize)
        );
        assert_eq!(StreamRole::from_stream_type("Resize"), None);
    }

    #[test]
    fn resize_decoder_handles_splits_and_batches() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(br#"{"Width":80,"#).unwrap(), vec![]);
        assert_eq!(
            d.feed(br#""Height":24}{"Width":100,"Height":50}"#).unwrap(),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert!(d.feed(b"\n").unwrap().is_empty());
        assert!(ResizeDecoder::default().feed(b"garbage").is_err());
        assert!(ResizeDecoder::default()
            .feed(br#"{"Width":-1,"Height":2}"#)
            .is_err());
        let mut long = ResizeDecoder::default();
        let mut r = long.feed(br#"{"Width":"#);
        assert!(r.as_ref().unwrap().is_empty());
        for _ in 0..1000 {
            r = long.feed(b"          ");
            if r.is_err() {
                break;
            }
        }
        assert!(r.is_err());
    }
}
