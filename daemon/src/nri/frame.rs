//! NRI's wire framing, both layers, as pure functions over bytes:
//!
//! - the mux (NRI `pkg/net/multiplex`): one unix socket carries several
//!   logical byte streams; every frame is a 4-byte big-endian connection id,
//!   a 4-byte big-endian payload length and the payload. Connection 1
//!   carries the plugin's service (crid is the client), connection 2 the
//!   runtime's service (crid is the server).
//! - ttrpc inside each logical stream: a 10-byte header (length, stream id,
//!   type, flags, big-endian) and a protobuf `ttrpc.Request` or
//!   `ttrpc.Response`.

/// The mux connection crid calls the plugin's service on.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// The mux connection the plugin calls crid's runtime service on.
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// Mux frame header length.
pub const MUX_HEADER_LEN: usize = 8;
/// ttrpc message header length.
pub const TTRPC_HEADER_LEN: usize = 10;
/// ttrpc's largest message body (4 MiB, as the Go implementation).
pub const TTRPC_MAX_LEN: usize = 4 << 20;
/// The largest mux payload NRI sends in one frame.
pub const MUX_MAX_PAYLOAD: usize = TTRPC_HEADER_LEN + TTRPC_MAX_LEN;
/// ttrpc message type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// ttrpc message type of a response.
pub const TYPE_RESPONSE: u8 = 2;

/// A framing error: the peer is not speaking NRI; the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A mux frame or ttrpc message larger than the protocol allows.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Which length.
        what: &'static str,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The largest frame crid sends. NRI's Go mux hands each frame whole to one
/// read of the peer's ttrpc reader, which reads through a 4 KiB buffer and
/// fails a frame larger than the buffer it is given (ENOMEM); frames of at
/// most 4 KiB, each message starting a new frame, always fit.
pub const MUX_WRITE_CHUNK: usize = 4096;

/// `payload` (one ttrpc message) as mux frames of connection `conn`, split
/// at [`MUX_WRITE_CHUNK`].
pub fn mux_encode(conn: u32, payload: &[u8]) -> Vec<u8> {
    let frames = payload.len().div_ceil(MUX_WRITE_CHUNK);
    let mut out = Vec::with_capacity(payload.len() + frames * MUX_HEADER_LEN);
    for chunk in payload.chunks(MUX_WRITE_CHUNK) {
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Splits a byte stream into mux frames; feed bytes as they arrive.
#[derive(Default)]
pub struct MuxReader {
    buf: Vec<u8>,
}

impl MuxReader {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame `(connection id, payload)`, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(u32, Vec<u8>)>, FrameError> {
        if self.buf.len() < MUX_HEADER_LEN {
            return Ok(None);
        }
        let conn = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MUX_MAX_PAYLOAD {
            return Err(FrameError::TooLarge {
                what: "mux frame",
                len,
                max: MUX_MAX_PAYLOAD,
            });
        }
        if self.buf.len() < MUX_HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[MUX_HEADER_LEN..MUX_HEADER_LEN + len].to_vec();
        self.buf.drain(..MUX_HEADER_LEN + len);
        Ok(Some((conn, payload)))
    }
}

/// One ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stream id: odd for the client's requests, echoed in the response.
    pub stream_id: u32,
    /// [`TYPE_REQUEST`] or [`TYPE_RESPONSE`] (data messages are not used by NRI).
    pub kind: u8,
    /// Flags (none used by unary calls).
    pub flags: u8,
    /// The protobuf body.
    pub body: Vec<u8>,
}

impl Message {
    /// The message's bytes: header then body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TTRPC_HEADER_LEN + self.body.len());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.stream_id.to_be_bytes());
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reassembles ttrpc messages from one logical stream's bytes (a message
/// may span several mux frames, or a frame hold several messages).
#[derive(Default)]
pub struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    /// Appends a mux frame's payload.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buf.len() < TTRPC_HEADER_LEN {
            return Ok(None);
        }
        let b = &self.buf;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > TTRPC_MAX_LEN {
            return Err(FrameError::TooLarge {
                what: "ttrpc message",
                len,
                max: TTRPC_MAX_LEN,
            });
        }
        if b.len() < TTRPC_HEADER_LEN + len {
            return Ok(None);
        }
        let msg = Message {
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
            body: b[TTRPC_HEADER_LEN..TTRPC_HEADER_LEN + len].to_vec(),
        };
        self.buf.drain(..TTRPC_HEADER_LEN + len);
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mux_frames_round_trip_in_arbitrary_pieces() {
        let mut wire = mux_encode(PLUGIN_SERVICE_CONN, b"hello");
        // Nothing to send, no frame.
        assert!(mux_encode(RUNTIME_SERVICE_CONN, b"").is_empty());
        wire.extend(mux_encode(RUNTIME_SERVICE_CONN, b"ab"));
        wire.extend(mux_encode(RUNTIME_SERVICE_CONN, b"world!"));
        // Header layout: id then length, both big-endian.
        assert_eq!(&wire[..8], &[0, 0, 0, 1, 0, 0, 0, 5]);
        let mut r = MuxReader::default();
        let mut got = Vec::new();
        for byte in &wire {
            r.push(std::slice::from_ref(byte));
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (1, b"hello".to_vec()),
                (2, b"ab".to_vec()),
                (2, b"world!".to_vec())
            ]
        );
    }

    #[test]
    fn large_payloads_split_into_frames_of_4_kib() {
        let payload: Vec<u8> = (0..2 * MUX_WRITE_CHUNK + 3).map(|i| i as u8).collect();
        let wire = mux_encode(1, &payload);
        let mut r = MuxReader::default();
        r.push(&wire);
        let mut lens = Vec::new();
        let mut joined = Vec::new();
        while let Some((id, p)) = r.next_frame().unwrap() {
            assert_eq!(id, 1);
            lens.push(p.len());
            joined.extend(p);
        }
        assert_eq!(lens, vec![MUX_WRITE_CHUNK, MUX_WRITE_CHUNK, 3]);
        assert_eq!(joined, payload);
    }

    #[test]
    fn oversized_frames_and_messages_are_refused() {
        let mut r = MuxReader::default();
        r.push(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(FrameError::TooLarge { .. })));
        let mut m = MessageReader::default();
        m.push(&[0x7f, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
        assert!(matches!(m.next_message(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn ttrpc_messages_reassemble_across_frames() {
        let a = Message {
            stream_id: 1,
            kind: TYPE_REQUEST,
            flags: 0,
            body: b"abc".to_vec(),
        };
        let b = Message {
            stream_id: 3,
            kind: TYPE_RESPONSE,
            flags: 0,
            body: vec![9; 300],
        };
        let bytes = [a.encode(), b.encode()].concat();
        assert_eq!(&bytes[..10], &[0, 0, 0, 3, 0, 0, 0, 1, 1, 0]);
        let mut r = MessageReader::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            r.push(chunk);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![a, b]);
    }
}
