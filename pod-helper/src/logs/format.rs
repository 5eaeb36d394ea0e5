//! The CRI log format: one entry per line,
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`.
//!
//! Splitting follows containerd's CRI plugin, which the kubelet's parser is
//! written against: a line ending in `\n` (or `\r\n`, both stripped) is `F`;
//! a line longer than the maximum is cut into `P` pieces of exactly the
//! maximum followed by the rest; bytes still pending when the stream ends
//! (no final newline) are written as a `P` entry.

use super::timestamp::rfc3339_nano;
use std::time::SystemTime;

/// Default maximum content length of one entry (containerd's `max_container_log_line_size`).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Which stream an entry came from (a TTY container has only stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (and a TTY's only stream).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether an entry ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The last piece of a line.
    Full,
    /// A piece of a longer line, or an unterminated tail.
    Partial,
}

/// Appends one formatted entry to `out`.
pub fn write_entry(out: &mut Vec<u8>, ts: SystemTime, stream: Stream, tag: Tag, content: &[u8]) {
    write_stamped(out, &rfc3339_nano(ts), stream, tag, content);
}

/// Appends one entry with an already formatted timestamp (formatting it once
/// per read instead of once per line is most of the drain's CPU saving).
fn write_stamped(out: &mut Vec<u8>, stamp: &str, stream: Stream, tag: Tag, content: &[u8]) {
    out.extend_from_slice(stamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(match tag {
        Tag::Full => b'F',
        Tag::Partial => b'P',
    });
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Cuts one stream's bytes into entries, keeping an incomplete line between calls.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    max_line: usize,
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for `stream` with entries of at most `max_line` content bytes (0 = unlimited).
    pub fn new(stream: Stream, max_line: usize) -> LineSplitter {
        LineSplitter {
            stream,
            max_line,
            pending: Vec::new(),
        }
    }

    /// Bytes held back waiting for the end of their line.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds `data`; appends every entry it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], ts: SystemTime, out: &mut Vec<u8>) {
        let ts = rfc3339_nano(ts);
        let ts = ts.as_str();
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.append_bounded(&data[..i], ts, out);
                    let mut line = std::mem::take(&mut self.pending);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    write_stamped(out, ts, self.stream, Tag::Full, &line);
                    // Reuse the allocation for the next line.
                    line.clear();
                    self.pending = line;
                    data = &data[i + 1..];
                }
                None => {
                    self.append_bounded(data, ts, out);
                    data = &[];
                }
            }
        }
    }

    /// Ends the stream: an unterminated tail becomes a `P` entry.
    pub fn finish(&mut self, ts: SystemTime, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            write_entry(out, ts, self.stream, Tag::Partial, &line);
        }
    }

    /// Adds bytes of the current line, emitting `P` pieces whenever the line
    /// grows past the maximum.
    fn append_bounded(&mut self, mut bytes: &[u8], ts: &str, out: &mut Vec<u8>) {
        if self.max_line == 0 {
            self.pending.extend_from_slice(bytes);
            return;
        }
        while self.pending.len() + bytes.len() > self.max_line {
            let take = self.max_line - self.pending.len();
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // A cut between "\r" and "\n" keeps the "\r" as content of the
            // piece, as containerd's cut does.
            write_stamped(out, ts, self.stream, Tag::Partial, &self.pending);
            self.pending.clear();
        }
        self.pending.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const TS: &str = "2026-01-01T00:00:00.5Z";

    fn ts() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_767_225_600, 500_000_000)
    }

    /// Entries as (stream, tag, content) after checking the timestamp.
    fn entries(out: &[u8]) -> Vec<(String, char, String)> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                assert_eq!(parts.next(), Some(TS));
                let stream = parts.next().unwrap().to_string();
                let tag = parts.next().unwrap().chars().next().unwrap();
                (stream, tag, parts.next().unwrap_or("").to_string())
            })
            .collect()
    }

    fn run(
        stream: Stream,
        max: usize,
        chunks: &[&[u8]],
        finish: bool,
    ) -> Vec<(String, char, String)> {
        let mut s = LineSplitter::new(stream, max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, ts(), &mut out);
        }
        if finish {
            s.finish(ts(), &mut out);
        }
        entries(&out)
    }

    fn e(stream: &str, tag: char, content: &str) -> (String, char, String) {
        (stream.into(), tag, content.into())
    }

    #[test]
    fn whole_lines_and_lines_split_across_reads() {
        assert_eq!(
            run(Stream::Stdout, 100, &[b"one\ntw", b"o\n", b"\n"], true),
            vec![
                e("stdout", 'F', "one"),
                e("stdout", 'F', "two"),
                e("stdout", 'F', "")
            ]
        );
    }

    #[test]
    fn crlf_is_stripped_and_lone_cr_kept() {
        assert_eq!(
            run(Stream::Stdout, 100, &[b"a\r\nb\rc\n"], true),
            vec![e("stdout", 'F', "a"), e("stdout", 'F', "b\rc")]
        );
    }

    #[test]
    fn long_lines_become_partial_pieces_that_join() {
        let line = "x".repeat(25);
        let input = format!("{line}\n");
        let got = run(Stream::Stderr, 10, &[input.as_bytes()], true);
        assert_eq!(
            got,
            vec![
                e("stderr", 'P', &"x".repeat(10)),
                e("stderr", 'P', &"x".repeat(10)),
                e("stderr", 'F', &"x".repeat(5)),
            ]
        );
        let joined: String = got.iter().map(|(_, _, c)| c.as_str()).collect();
        assert_eq!(joined, line);
    }

    #[test]
    fn a_line_of_exactly_the_maximum_is_one_full_entry() {
        assert_eq!(
            run(Stream::Stdout, 4, &[b"abcd\n"], true),
            vec![e("stdout", 'F', "abcd")]
        );
    }

    #[test]
    fn the_cut_does_not_depend_on_read_boundaries() {
        let input = b"0123456789abcdefghij\nshort\n";
        let whole = run(Stream::Stdout, 7, &[input], true);
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(Stream::Stdout, 7, &bytewise, true), whole);
    }

    #[test]
    fn unterminated_tail_is_partial_at_end_only() {
        let mut s = LineSplitter::new(Stream::Stdout, 100);
        let mut out = Vec::new();
        s.push(b"done\nhalf", ts(), &mut out);
        assert_eq!(entries(&out), vec![e("stdout", 'F', "done")]);
        assert_eq!(s.pending(), 4);
        s.finish(ts(), &mut out);
        assert_eq!(
            entries(&out),
            vec![e("stdout", 'F', "done"), e("stdout", 'P', "half")]
        );
        let mut again = Vec::new();
        s.finish(ts(), &mut again);
        assert!(again.is_empty(), "finish twice writes nothing more");
    }

    #[test]
    fn unlimited_line_length() {
        let big = "y".repeat(100_000);
        let got = run(Stream::Stdout, 0, &[format!("{big}\n").as_bytes()], true);
        assert_eq!(got, vec![e("stdout", 'F', &big)]);
    }

    #[test]
    fn binary_content_passes_through() {
        let mut s = LineSplitter::new(Stream::Stdout, 100);
        let mut out = Vec::new();
        s.push(b"\x00\xff\x01\n", ts(), &mut out);
        let prefix = format!("{TS} stdout F ");
        assert_eq!(&out[..prefix.len()], prefix.as_bytes());
        assert_eq!(&out[prefix.len()..], b"\x00\xff\x01\n");
    }
}
