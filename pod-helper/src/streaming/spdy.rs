//! SPDY/3.1, as kubectl and the kubelet speak it (Go's `x/net/spdy` framer
//! under `moby/spdystream`), written by us because no crate offers it.
//!
//! - [`frame`]: frame types, encoder and decoder (pure, synchronous).
//! - [`headers`]: header blocks and their shared-context zlib compression.
//! - [`session`]: an async server-side session over any tokio byte stream:
//!   accepts the streams the client opens, replies to them, and gives the
//!   caller per-stream read / write / half-close with flow control.

pub mod frame;
pub mod headers;
pub mod session;

/// Everything that can go wrong in SPDY framing or a SPDY session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The peer broke the protocol (the connection is then closed).
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    /// A control frame with a version other than 3.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A frame longer than the configured maximum.
    #[error("SPDY frame of {0} bytes is over the limit")]
    FrameTooLarge(usize),
    /// A name/value header block that does not parse.
    #[error("invalid SPDY header block: {0}")]
    InvalidHeaderBlock(&'static str),
    /// zlib failed (corrupt or out-of-step header compression).
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// We were asked to encode something the wire cannot carry.
    #[error("cannot encode SPDY frame: {0}")]
    Encode(&'static str),
    /// The peer reset the stream (RST_STREAM status).
    #[error("stream reset by peer (status {0})")]
    StreamReset(u32),
    /// The stream was already half-closed in that direction.
    #[error("stream already closed for writing")]
    StreamClosed,
    /// The connection ended before the stream did.
    #[error("SPDY connection closed")]
    ConnectionClosed,
    /// I/O on the underlying connection.
    #[error("SPDY connection I/O: {0}")]
    Io(#[from] std::io::Error),
}
