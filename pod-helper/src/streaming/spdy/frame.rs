//! SPDY/3.1 frames: the typed representation, the encoder and the decoder.
//!
//! Wire format (draft-mbelshe-httpbis-spdy-00 / SPDY 3.1): every frame has an
//! 8-byte header. Control frames: `1 | version(15) | type(16)`, `flags(8) |
//! length(24)`; data frames: `0 | stream-id(31)`, `flags(8) | length(24)`.
//! Header blocks inside SYN_STREAM, SYN_REPLY and HEADERS go through the
//! connection's shared zlib contexts (see `headers`), which is why encoding
//! and decoding are methods of stateful per-direction objects.

use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use super::SpdyError;

/// The only protocol version spoken.
pub const VERSION: u16 = 3;
/// Length of every frame header.
pub const HEADER_LEN: usize = 8;
/// Largest length the 24-bit field can carry.
pub const MAX_LENGTH_FIELD: usize = 0x00ff_ffff;

/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Control frame types.
pub mod kind {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// HEADERS.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    /// Generic protocol error.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// Frame for a stream that is not active.
    pub const INVALID_STREAM: u32 = 2;
    /// Stream refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 5;
    /// Internal error.
    pub const INTERNAL_ERROR: u32 = 6;
    /// The peer violated flow control.
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    /// SYN_STREAM for a stream id already in use.
    pub const STREAM_IN_USE: u32 = 8;
    /// Data or SYN_REPLY on a half-closed stream.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    /// Normal shutdown.
    pub const OK: u32 = 0;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// Internal error.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (persist/persisted).
    pub flags: u8,
    /// 24-bit setting id.
    pub id: u32,
    /// Value.
    pub value: u32,
}

/// A decoded or to-be-encoded SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// New stream id (odd when opened by the client).
        stream_id: u32,
        /// Associated stream (server push); 0 if none.
        associated_to: u32,
        /// Priority 0 (highest) .. 7.
        priority: u8,
        /// Credential slot (unused, 0).
        slot: u8,
        /// FLAG_FIN / FLAG_UNIDIRECTIONAL.
        flags: u8,
        /// Headers (kubectl: `streamtype`, `port`, `requestid`).
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream being accepted.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// Stream reset.
        stream_id: u32,
        /// One of [`rst`].
        status: u32,
    },
    /// Connection settings.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        flags: u8,
        /// Entries.
        entries: Vec<Setting>,
    },
    /// Liveness check; echoed by the receiver when the id's parity is the peer's.
    Ping {
        /// Opaque id (odd from clients, even from servers).
        id: u32,
    },
    /// The sender will not accept new streams.
    GoAway {
        /// Highest stream id the sender processed.
        last_good_stream_id: u32,
        /// One of [`goaway`].
        status: u32,
    },
    /// Extra headers on a stream.
    Headers {
        /// Stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Adds to the sender's view of the receiver's window.
    WindowUpdate {
        /// Stream (SPDY/3.1 stream 0 = the whole session).
        stream_id: u32,
        /// 31-bit increment, > 0.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// Stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Payload.
        data: Vec<u8>,
    },
    /// A control frame type this implementation does not know (the spec
    /// says to ignore those).
    Unknown {
        /// The type field.
        frame_type: u16,
    },
}

/// Encodes frames, owning the sending direction's header compressor.
pub struct FrameEncoder {
    headers: HeaderCompressor,
}

impl FrameEncoder {
    /// A new encoder with a fresh compression context.
    pub fn new() -> Result<Self, SpdyError> {
        Ok(Self {
            headers: HeaderCompressor::new()?,
        })
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, kind::SYN_STREAM, *flags, 10 + block.len())?;
                put_id(out, *stream_id)?;
                put_id(out, *associated_to)?;
                out.push((priority & 0x07) << 5);
                out.push(*slot);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, kind::SYN_REPLY, *flags, 4 + block.len())?;
                put_id(out, *stream_id)?;
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, kind::RST_STREAM, 0, 8)?;
                put_id(out, *stream_id)?;
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings { flags, entries } => {
                control(out, kind::SETTINGS, *flags, 4 + 8 * entries.len())?;
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for e in entries {
                    if e.id > 0x00ff_ffff {
                        return Err(SpdyError::Encode("setting id over 24 bits"));
                    }
                    out.extend_from_slice(&((u32::from(e.flags) << 24) | e.id).to_be_bytes());
                    out.extend_from_slice(&e.value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control(out, kind::PING, 0, 4)?;
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, kind::GOAWAY, 0, 8)?;
                put_id(out, *last_good_stream_id)?;
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, kind::HEADERS, *flags, 4 + block.len())?;
                put_id(out, *stream_id)?;
                out.extend_from_slice(&block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                if *delta == 0 || *delta > 0x7fff_ffff {
                    return Err(SpdyError::Encode("window delta out of range"));
                }
                control(out, kind::WINDOW_UPDATE, 0, 8)?;
                put_id(out, *stream_id)?;
                out.extend_from_slice(&delta.to_be_bytes());
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if *stream_id == 0 {
                    return Err(SpdyError::Encode("data frame on stream 0"));
                }
                put_id(out, *stream_id)?;
                put_flags_len(out, *flags, data.len())?;
                out.extend_from_slice(data);
            }
            Frame::Unknown { .. } => return Err(SpdyError::Encode("unknown frame")),
        }
        Ok(())
    }
}

fn put_id(out: &mut Vec<u8>, id: u32) -> Result<(), SpdyError> {
    if id > 0x7fff_ffff {
        return Err(SpdyError::Encode("stream id over 31 bits"));
    }
    out.extend_from_slice(&id.to_be_bytes());
    Ok(())
}

fn put_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) -> Result<(), SpdyError> {
    if len > MAX_LENGTH_FIELD {
        return Err(SpdyError::Encode("frame longer than 24 bits"));
    }
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    Ok(())
}

fn control(out: &mut Vec<u8>, ty: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    put_flags_len(out, flags, len)
}

/// Decodes frames from a byte buffer, owning the receiving direction's
/// header decompressor.
pub struct FrameDecoder {
    headers: HeaderDecompressor,
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A new decoder refusing frames whose payload exceeds `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            headers: HeaderDecompressor::new(),
            max_frame_len: max_frame_len.min(MAX_LENGTH_FIELD),
        }
    }

    /// How many bytes the frame starting at `buf` needs in total, once its
    /// header is there; errors early for an oversized frame.
    pub fn needed(&self, buf: &[u8]) -> Result<Option<usize>, SpdyError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > self.max_frame_len {
            return Err(SpdyError::FrameTooLarge(len));
        }
        Ok(Some(HEADER_LEN + len))
    }

    /// Decodes one frame from the start of `buf`: `Ok(None)` if more bytes
    /// are needed, else the frame and how many bytes it used. Any malformed
    /// input is an error (the connection is then unusable: the header
    /// decompression context may be out of step).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        let Some(total) = self.needed(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let flags = buf[4];
        let p = &buf[HEADER_LEN..total];
        let word0 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if word0 & 0x8000_0000 == 0 {
            let stream_id = word0;
            if stream_id == 0 {
                return Err(SpdyError::Protocol("data frame on stream 0"));
            }
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: p.to_vec(),
                },
                total,
            )));
        }
        let version = ((word0 >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let ty = (word0 & 0xffff) as u16;
        let frame = match ty {
            kind::SYN_STREAM => {
                need(p, 10)?;
                let stream_id = id31(p, 0)?;
                Frame::SynStream {
                    stream_id,
                    associated_to: be32(p, 4) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    slot: p[9],
                    flags,
                    headers: self.headers.decompress(&p[10..])?,
                }
            }
            kind::SYN_REPLY => {
                need(p, 4)?;
                Frame::SynReply {
                    stream_id: id31(p, 0)?,
                    flags,
                    headers: self.headers.decompress(&p[4..])?,
                }
            }
            kind::RST_STREAM => {
                exact(p, 8)?;
                Frame::RstStream {
                    stream_id: id31(p, 0)?,
                    status: be32(p, 4),
                }
            }
            kind::SETTINGS => {
                need(p, 4)?;
                let n = be32(p, 0) as usize;
                if n.checked_mul(8).and_then(|b| b.checked_add(4)) != Some(p.len()) {
                    return Err(SpdyError::Protocol("SETTINGS length mismatch"));
                }
                let entries = (0..n)
                    .map(|i| {
                        let w = be32(p, 4 + 8 * i);
                        Setting {
                            flags: (w >> 24) as u8,
                            id: w & 0x00ff_ffff,
                            value: be32(p, 8 + 8 * i),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                exact(p, 4)?;
                Frame::Ping { id: be32(p, 0) }
            }
            kind::GOAWAY => {
                // SPDY/3 added the status; tolerate the 4-byte SPDY/2 form.
                if p.len() != 8 && p.len() != 4 {
                    return Err(SpdyError::Protocol("GOAWAY length"));
                }
                Frame::GoAway {
                    last_good_stream_id: be32(p, 0) & 0x7fff_ffff,
                    status: if p.len() == 8 { be32(p, 4) } else { 0 },
                }
            }
            kind::HEADERS => {
                need(p, 4)?;
                Frame::Headers {
                    stream_id: id31(p, 0)?,
                    flags,
                    headers: self.headers.decompress(&p[4..])?,
                }
            }
            kind::WINDOW_UPDATE => {
                exact(p, 8)?;
                let delta = be32(p, 4) & 0x7fff_ffff;
                if delta == 0 {
                    return Err(SpdyError::Protocol("WINDOW_UPDATE with zero delta"));
                }
                Frame::WindowUpdate {
                    stream_id: be32(p, 0) & 0x7fff_ffff,
                    delta,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some((frame, total)))
    }
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn id31(p: &[u8], at: usize) -> Result<u32, SpdyError> {
    let id = be32(p, at) & 0x7fff_ffff;
    if id == 0 {
        return Err(SpdyError::Protocol("stream id 0"));
    }
    Ok(id)
}

fn need(p: &[u8], n: usize) -> Result<(), SpdyError> {
    if p.len() < n {
        return Err(SpdyError::Protocol("control frame too short"));
    }
    Ok(())
}

fn exact(p: &[u8], n: usize) -> Result<(), SpdyError> {
    if p.len() != n {
        return Err(SpdyError::Protocol("control frame has the wrong length"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                slot: 0,
                flags: FLAG_FIN,
                headers: Headers::new().with("streamtype", "error"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![
                    Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 65536,
                    },
                    Setting {
                        flags: 1,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: goaway::PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 5,
                flags: FLAG_FIN,
                headers: Headers::new().with("a", "b"),
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 1024,
            },
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 0x7fff_fffd,
                flags: 0,
                data: vec![],
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_in_one_stream() {
        let mut enc = FrameEncoder::new().unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        let frames = all_frames();
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut at = 0;
        for f in &frames {
            let Some((got, used)) = dec.decode(&wire[at..]).unwrap() else {
                panic!("incomplete at {at}");
            };
            assert_eq!(&got, f);
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn partial_input_asks_for_more() {
        let mut enc = FrameEncoder::new().unwrap();
        let mut wire = Vec::new();
        enc.encode(&Frame::Ping { id: 1 }, &mut wire).unwrap();
        let mut dec = FrameDecoder::new(1024);
        for n in 0..wire.len() {
            assert_eq!(dec.decode(&wire[..n]).unwrap(), None);
        }
        assert!(dec.decode(&wire).unwrap().is_some());
    }

    #[test]
    fn exact_wire_bytes() {
        let mut enc = FrameEncoder::new().unwrap();
        let mut w = Vec::new();
        enc.encode(&Frame::Ping { id: 0x0102_0304 }, &mut w)
            .unwrap();
        assert_eq!(w, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 1, 2, 3, 4]);
        w.clear();
        enc.encode(
            &Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: b"ab".to_vec(),
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(w, [0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']);
        w.clear();
        enc.encode(
            &Frame::WindowUpdate {
                stream_id: 3,
                delta: 65536,
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(w, [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 1, 0, 0]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 1, 2, 3, 4], // version 2
            vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 3, 1, 2, 3],    // short ping
            vec![0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1], // short RST
            vec![0, 0, 0, 0, 0, 0, 0, 1, 9],                      // data on stream 0
            vec![0x80, 0x03, 0x00, 0x01, 0, 0, 0, 2, 0, 1],       // short SYN_STREAM
            vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0], // zero delta
            vec![0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 2],          // settings count
            // SYN_STREAM whose header block is not zlib.
            vec![
                0x80, 3, 0, 1, 0, 0, 0, 13, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3,
            ],
        ];
        for c in cases {
            let mut dec = FrameDecoder::new(1024);
            assert!(dec.decode(&c).is_err(), "{c:?} decoded");
        }
        let dec = FrameDecoder::new(16);
        assert!(matches!(
            dec.needed(&[0, 0, 0, 1, 0, 0, 0, 17]),
            Err(SpdyError::FrameTooLarge(17))
        ));
    }

    #[test]
    fn unknown_control_type_is_skipped() {
        let mut dec = FrameDecoder::new(1024);
        let w = [0x80, 3, 0, 0x0a, 0, 0, 0, 2, 1, 2];
        assert_eq!(
            dec.decode(&w).unwrap(),
            Some((Frame::Unknown { frame_type: 10 }, 10))
        );
    }

    /// A cheap fuzz: random bytes (and random mutations of valid frames)
    /// must give frames or errors, never a panic or a hang.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = Vec::new();
        let mut enc = FrameEncoder::new().unwrap();
        for f in all_frames() {
            enc.encode(&f, &mut valid).unwrap();
        }
        for round in 0..20_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..(rnd() % 64) as usize).map(|_| rnd() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..(1 + rnd() % 4) {
                    let i = (rnd() as usize) % v.len();
                    v[i] = rnd() as u8;
                }
                v
            };
            if round % 3 == 0 {
                // Make it look like a v3 control frame to get past the header.
                if buf.len() >= 8 {
                    buf[0] = 0x80;
                    buf[1] = 3;
                    buf[2] = 0;
                    buf[3] = (rnd() % 10) as u8;
                }
            }
            let mut dec = FrameDecoder::new(1 << 16);
            let mut at = 0;
            while at < buf.len() {
                match dec.decode(&buf[at..]) {
                    Ok(Some((_, used))) => at += used,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
