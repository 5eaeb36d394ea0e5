//! A container output stream read without consuming it: the drain looks at
//! a pipe's (or FIFO's) bytes through `tee(2)` into a private pipe, and
//! takes them out of the source only once the entries they make are in the
//! log ([`Source::consume`]). A helper killed in between leaves the bytes in
//! the kernel's pipe for the next helper: at worst they are written twice
//! (killed after the write, before the consume), never lost.
//!
//! Anything that is not a pipe (`tee` answers `EINVAL`) is read the plain
//! way, consumed when read.

use nix::errno::Errno;
use nix::fcntl::{fcntl, tee, FcntlArg, OFlag, SpliceFFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Capacity a source pipe is grown to: four 64 KiB windows, room for the
/// bytes waiting for their write plus new ones, while a stalled disk still
/// blocks the writer within a few hundred KiB.
pub const PIPE_SIZE: usize = 256 * 1024;

/// What one look at a source found.
#[derive(Debug, PartialEq, Eq)]
pub enum Look {
    /// This many bytes at the start of the caller's buffer are new.
    New(usize),
    /// Nothing beyond what was seen already (or nothing at all yet).
    Nothing,
    /// The writers are gone and every byte was seen.
    End,
}

/// One container output stream.
pub struct Source {
    file: File,
    /// Private pipe the source's bytes are teed into (`None`: not a pipe).
    peek: Option<(File, OwnedFd)>,
    /// Bytes at the head of `file` already returned by [`Source::look`] but
    /// not yet consumed.
    seen: usize,
    /// Scratch for reading teed bytes (and consumed bytes).
    scratch: Vec<u8>,
}

impl Source {
    /// Wraps the (non-blocking) read side of a pipe or FIFO, growing the
    /// pipe to [`PIPE_SIZE`] (best effort): unconsumed bytes wait in it
    /// until written, so a default 64 KiB pipe would block the writer
    /// about twice as often as a drain that consumes when reading.
    pub fn new(file: File) -> Source {
        if let Ok(size) = fcntl(file.as_raw_fd(), FcntlArg::F_GETPIPE_SZ) {
            if (size as usize) < PIPE_SIZE {
                let _ = fcntl(file.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
            }
        }
        let peek = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .ok()
            .map(|(r, w)| (File::from(r), w));
        Source {
            file,
            peek,
            seen: 0,
            scratch: Vec::new(),
        }
    }

    /// The source's fd (to poll).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Bytes seen and not yet consumed (0 for a non-pipe).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Copies bytes not seen before into `buf` (up to its length, less what
    /// is seen and unconsumed). A non-pipe source is read (and so consumed).
    pub fn look(&mut self, buf: &mut [u8]) -> io::Result<Look> {
        let Some((peek_r, peek_w)) = &self.peek else {
            return self.read_plain(buf);
        };
        // The private pipe holds the whole window: make it as large as
        // `buf` (best effort; a smaller pipe only makes windows smaller).
        let want = buf.len();
        if let Ok(size) = fcntl(peek_w.as_raw_fd(), FcntlArg::F_GETPIPE_SZ) {
            if (size as usize) < want {
                let _ = fcntl(
                    peek_w.as_raw_fd(),
                    FcntlArg::F_SETPIPE_SZ(want.min(i32::MAX as usize) as i32),
                );
            }
        }
        let n = match tee(
            self.file.as_fd(),
            peek_w.as_fd(),
            want,
            SpliceFFlags::SPLICE_F_NONBLOCK,
        ) {
            Ok(0) => {
                return Ok(if self.seen == 0 {
                    Look::End
                } else {
                    Look::Nothing
                })
            }
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(Look::Nothing),
            Err(Errno::EINVAL) if self.seen == 0 => {
                // Not a pipe (a file or socket in tests, or a future input):
                // read it the plain way from now on.
                self.peek = None;
                return self.read_plain(buf);
            }
            Err(e) => return Err(e.into()),
        };
        // Take the copy out of the private pipe: the first `seen` bytes
        // were handed out before.
        if self.scratch.len() < n {
            self.scratch.resize(n, 0);
        }
        let mut got = 0;
        while got < n {
            match (&*peek_r).read(&mut self.scratch[got..n]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if got <= self.seen {
            return Ok(Look::Nothing);
        }
        let new = got - self.seen;
        buf[..new].copy_from_slice(&self.scratch[self.seen..got]);
        self.seen = got;
        Ok(Look::New(new))
    }

    /// Takes the first `n` seen bytes out of the source (their entries are
    /// written, or dropped for good).
    pub fn consume(&mut self, n: usize) -> io::Result<()> {
        if self.peek.is_none() {
            return Ok(());
        }
        let n = n.min(self.seen);
        if self.scratch.len() < n {
            self.scratch.resize(n, 0);
        }
        let mut done = 0;
        while done < n {
            match self.file.read(&mut self.scratch[..n - done]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.seen -= done;
                    return Err(e);
                }
            }
        }
        self.seen -= done;
        Ok(())
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<Look> {
        match self.file.read(buf) {
            Ok(0) => Ok(Look::End),
            Ok(n) => Ok(Look::New(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Look::Nothing)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn bytes_stay_in_the_pipe_until_consumed() {
        let (r, mut w) = pipe();
        let mut s = Source::new(r);
        let mut buf = [0u8; 64];
        assert_eq!(s.look(&mut buf).unwrap(), Look::Nothing);
        w.write_all(b"abc\nde").unwrap();
        assert_eq!(s.look(&mut buf).unwrap(), Look::New(6));
        assert_eq!(&buf[..6], b"abc\nde");
        assert_eq!(s.look(&mut buf).unwrap(), Look::Nothing);
        w.write_all(b"f\n").unwrap();
        assert_eq!(s.look(&mut buf).unwrap(), Look::New(2));
        assert_eq!(&buf[..2], b"f\n");
        s.consume(4).unwrap();
        assert_eq!(s.seen(), 4);
        // A second reader (the next helper) finds the unconsumed bytes.
        let mut rest = Vec::new();
        drop(w);
        s.file.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"def\n");
    }

    #[test]
    fn end_only_once_every_byte_is_consumed() {
        let (r, mut w) = pipe();
        let mut s = Source::new(r);
        let mut buf = [0u8; 64];
        w.write_all(b"x").unwrap();
        drop(w);
        assert_eq!(s.look(&mut buf).unwrap(), Look::New(1));
        assert_eq!(s.look(&mut buf).unwrap(), Look::Nothing);
        s.consume(1).unwrap();
        assert_eq!(s.look(&mut buf).unwrap(), Look::End);
    }

    #[test]
    fn a_regular_file_is_read_plainly() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello").unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let mut s = Source::new(f);
        let mut buf = [0u8; 64];
        assert_eq!(s.look(&mut buf).unwrap(), Look::New(5));
        assert_eq!(s.look(&mut buf).unwrap(), Look::End);
    }
}
