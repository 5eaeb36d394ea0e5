//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! A header block is `u32 count` then `count` times `u32 len, name, u32 len,
//! value` (values with several entries are joined by NUL). Blocks are
//! compressed with zlib primed with the SPDY/3 dictionary, and — this is the
//! part that is easy to get wrong — ONE compression context is shared by all
//! header blocks a peer sends on a connection (and one decompression context
//! by all it receives), each block ending with a sync flush. So the second
//! block's bytes only decompress after the first one's: encoder and decoder
//! are stateful, exactly one of each per direction per connection, as in Go's
//! `golang.org/x/net/spdy` framer that kubectl and the kubelet use.

use std::sync::OnceLock;

use flate2::{Decompress, FlushDecompress, Status};

use super::SpdyError;

/// Upper bound of a decompressed header block; kubectl's are a few hundred
/// bytes, this only stops a zlib bomb.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Upper bound of name/value pairs in one block.
const MAX_HEADER_PAIRS: usize = 1024;

/// The words of the SPDY/3 dictionary, each stored as `u32 len` + bytes.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text that follows the words in the SPDY/3 dictionary.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
);

/// The SPDY/3 zlib dictionary (draft-mbelshe-httpbis-spdy, section 2.6.10.1).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

/// Header list of a SYN_STREAM / SYN_REPLY / HEADERS frame: lower-case names
/// in wire order; a value holding several entries keeps its NUL separators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builder-style add (name lower-cased, as SPDY/3 requires).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// First value of `name` (case-insensitive), up to the first NUL.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// Serializes the uncompressed name/value block.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.0.len() * 32);
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (n, v) in &self.0 {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses an uncompressed name/value block; rejects truncation, trailing
    /// bytes, empty or upper-case names, invalid UTF-8 and duplicate names.
    pub fn decode_block(block: &[u8]) -> Result<Self, SpdyError> {
        let mut r = Cursor { buf: block, pos: 0 };
        let count = r.u32()? as usize;
        if count > MAX_HEADER_PAIRS {
            return Err(SpdyError::InvalidHeaderBlock("too many headers"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string()?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(SpdyError::InvalidHeaderBlock("invalid header name"));
            }
            let value = r.string()?;
            if pairs.iter().any(|(n, _): &(String, String)| *n == name) {
                return Err(SpdyError::InvalidHeaderBlock("duplicate header name"));
            }
            pairs.push((name, value));
        }
        if r.pos != block.len() {
            return Err(SpdyError::InvalidHeaderBlock("trailing bytes"));
        }
        Ok(Self(pairs))
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SpdyError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(SpdyError::InvalidHeaderBlock("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, SpdyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, SpdyError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| SpdyError::InvalidHeaderBlock("not UTF-8"))
    }
}

/// The sending side's zlib stream (one per connection).
///
/// It writes a valid zlib stream primed with the SPDY/3 dictionary (FDICT
/// header with the dictionary's Adler-32) whose header blocks are *stored*
/// (uncompressed) deflate blocks. Any zlib reader, Go's included, decodes
/// it exactly as a compressed one, and no deflate state exists: a deflate
/// context costs ~256 KiB per connection (measured: 349 KiB of RSS per idle
/// connection with it, see docs/PERFORMANCE.md), far over the helper's
/// budget, while what we send is a few empty SYN_REPLYs per exec, which
/// gain nothing from compression. Each block ends with the empty stored
/// block that a sync flush writes, so the peer decodes it at once.
pub struct HeaderCompressor {
    started: bool,
}

/// Largest payload of one stored deflate block.
const STORED_MAX: usize = 0xffff;
/// An empty non-final stored block, what zlib's Z_SYNC_FLUSH emits.
const SYNC_FLUSH: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

impl HeaderCompressor {
    /// A fresh stream (its first block carries the zlib header).
    pub fn new() -> Result<Self, SpdyError> {
        Ok(Self { started: false })
    }

    /// Encodes one header block as the next bytes of the stream.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let raw = headers.encode_block();
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window); FLG 0x20: FDICT, no level,
            // and (0x7820 % 31 == 0) so FCHECK is 0.
            out.extend_from_slice(&[0x78, 0x20]);
            out.extend_from_slice(&adler32(dictionary()).to_be_bytes());
            self.started = true;
        }
        for chunk in raw.chunks(STORED_MAX) {
            let len = chunk.len() as u16;
            out.push(0x00); // BFINAL 0, BTYPE 00 (stored), padding to the byte
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The sync-flush marker: an empty stored block. Go's inflater only
        // hands out a stored block's bytes when it reaches the next block
        // header, so without it the block would wait for the NEXT frame
        // (and fail at this frame's end) — found by the spdystream test.
        out.extend_from_slice(&SYNC_FLUSH);
        Ok(out)
    }
}

/// Adler-32 (RFC 1950 §8.2), for the zlib header's dictionary id.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// The receiving side's decompression context (one per connection).
pub struct HeaderDecompressor {
    z: Decompress,
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when zlib asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompresses one header block (all of `input`) and parses it.
    pub fn decompress(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(input)?;
        Headers::decode_block(&raw)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(512);
        let start_in = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            let before_out = self.z.total_out();
            match self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Compression("header stream ended".into()))
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.z
                            .set_dictionary(dictionary())
                            .map_err(|e| SpdyError::Compression(e.to_string()))?;
                        continue;
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::InvalidHeaderBlock("header block too large"));
            }
            let consumed = (self.z.total_in() - start_in) as usize;
            let progressed = self.z.total_out() != before_out;
            if consumed == input.len() && (out.len() < out.capacity() || !progressed) {
                return Ok(out);
            }
            if !progressed && consumed < input.len() && out.len() < out.capacity() {
                // zlib neither consumed nor produced: corrupt input.
                return Err(SpdyError::Compression("stalled header block".into()));
            }
        }
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_spdy3_size() {
        // draft 3 §2.6.10.1: the dictionary is 1423 bytes long.
        assert_eq!(dictionary().len(), 1423);
        assert!(dictionary().starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dictionary().ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn block_round_trip() {
        let h = Headers::new()
            .with("streamType", "stdin")
            .with("multi", "a\0b");
        let back = Headers::decode_block(&h.encode_block()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.get("STREAMTYPE"), Some("stdin"));
        assert_eq!(back.get("multi"), Some("a"));
    }

    /// A compressor as Go's framer has one: real deflate, dictionary,
    /// one context for all blocks, sync flush after each.
    struct GoStyle(flate2::Compress);

    impl GoStyle {
        fn new() -> Self {
            let mut z = flate2::Compress::new(flate2::Compression::best(), true);
            z.set_dictionary(dictionary()).unwrap();
            Self(z)
        }
        fn compress(&mut self, h: &Headers) -> Vec<u8> {
            let input = h.encode_block();
            let mut out = Vec::with_capacity(input.len() + 1024);
            let before = self.0.total_in();
            self.0
                .compress_vec(&input, &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            assert_eq!((self.0.total_in() - before) as usize, input.len());
            assert!(out.len() < out.capacity(), "flush complete");
            out
        }
    }

    #[test]
    fn shared_context_across_blocks() {
        let mut c = GoStyle::new();
        let a = Headers::new()
            .with("streamtype", "stdout")
            .with("port", "8080");
        let b = Headers::new()
            .with("streamtype", "stdout")
            .with("port", "8080");
        let za = c.compress(&a);
        let zb = c.compress(&b);
        // The second identical block back-references the first.
        assert!(zb.len() < za.len(), "{} !< {}", zb.len(), za.len());
        let mut d = HeaderDecompressor::new();
        assert_eq!(d.decompress(&za).unwrap(), a);
        assert_eq!(d.decompress(&zb).unwrap(), b);
        // A fresh decompressor cannot decode the second block alone.
        let mut fresh = HeaderDecompressor::new();
        assert!(fresh.decompress(&zb).is_err());
        // Our own stream also only decodes in order (one zlib stream).
        let mut ours = HeaderCompressor::new().unwrap();
        let _ = ours.compress(&a).unwrap();
        let second = ours.compress(&b).unwrap();
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn our_stream_is_zlib_with_the_dictionary() {
        let mut c = HeaderCompressor::new().unwrap();
        let z = c
            .compress(&Headers::new().with("content-type", "x"))
            .unwrap();
        // zlib header: FDICT bit (0x20 in FLG), valid check, dictionary id.
        assert_eq!(z[1] & 0x20, 0x20);
        assert_eq!((u16::from(z[0]) << 8 | u16::from(z[1])) % 31, 0);
        let mut reference = flate2::Compress::new(flate2::Compression::default(), true);
        let dict_adler = reference.set_dictionary(dictionary()).unwrap();
        assert_eq!(adler32(dictionary()), dict_adler);
        assert_eq!(z[2..6], dict_adler.to_be_bytes());
        // Ends with the sync-flush marker, like every block.
        assert!(z.ends_with(&SYNC_FLUSH));
        assert!(c.compress(&Headers::new()).unwrap().ends_with(&SYNC_FLUSH));
        // A plain zlib decoder without dictionary must ask for it.
        let mut plain = Decompress::new(true);
        let mut out = Vec::with_capacity(256);
        let e = plain
            .decompress_vec(&z, &mut out, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(e.needs_dictionary(), Some(dict_adler));
    }

    #[test]
    fn many_blocks_and_large_values() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::new();
        for i in 0..50 {
            // Up to ~180 KiB: several stored blocks in one header block.
            let big = "x".repeat(i * i * 75);
            let h = Headers::new()
                .with("requestid", &i.to_string())
                .with("big", &big);
            let z = c.compress(&h).unwrap();
            assert_eq!(d.decompress(&z).unwrap(), h);
        }
        // And a Go-style compressed stream through the same kind of decoder.
        let mut go = GoStyle::new();
        let mut d = HeaderDecompressor::new();
        for i in 0..50 {
            let h = Headers::new().with("requestid", &i.to_string());
            assert_eq!(d.decompress(&go.compress(&h)).unwrap(), h);
        }
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(Headers::decode_block(&[0, 0]).is_err());
        assert!(Headers::decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(Headers::decode_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 0]).is_err());
        assert!(Headers::decode_block(&[0, 0, 0, 0, 1]).is_err());
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(b"not zlib at all").is_err());
    }
}
