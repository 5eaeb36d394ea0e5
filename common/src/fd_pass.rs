//! Passing one open file descriptor over a unix stream socket (SCM_RIGHTS):
//! how crid's streaming listener hands a client connection to a pod helper.
//!
//! The fd travels attached to a single marker byte sent *after* the control
//! frame that describes it, so the frame itself is read with plain reads and
//! the receiver only needs `recvmsg` for that one byte.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The marker byte carrying the fd.
const MARKER: u8 = b'F';

/// Sends `fd` over `sock` (the peer gets its own copy; ours stays open).
pub fn send_fd(sock: &impl AsRawFd, fd: &impl AsRawFd) -> std::io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&[MARKER])];
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    if n != 1 {
        return Err(std::io::Error::other("short sendmsg"));
    }
    Ok(())
}

/// Receives one fd sent by [`send_fd`]. Any extra fds are closed; a marker
/// without an fd is an error.
pub fn recv_fd(sock: &impl AsRawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let mut received: Vec<RawFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            received.extend(fds);
        }
    }
    let mut owned: Vec<OwnedFd> = received.into_iter().map(own).collect();
    if byte[0] != MARKER || owned.is_empty() {
        return Err(std::io::Error::other("expected a file descriptor"));
    }
    // Extra fds (a confused peer) are closed by dropping them.
    Ok(owned.swap_remove(0))
}

/// Takes ownership of an fd the kernel just installed in our table.
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was created by the kernel for this process by the
    // recvmsg(2) call above (SCM_RIGHTS); nothing else in the process knows
    // the number yet, so this is its one and only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn an_fd_crosses_and_stays_usable() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut x, y) = UnixStream::pair().unwrap();
        send_fd(&a, &y).unwrap();
        drop(y);
        let got = recv_fd(&b).unwrap();
        let mut y2 = UnixStream::from(got);
        x.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        y2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn a_frame_before_the_marker_is_read_with_plain_reads() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (_x, y) = UnixStream::pair().unwrap();
        crate::protocol::write_frame_sync(&mut a, &crate::protocol::Request::Ping).unwrap();
        send_fd(&a, &y).unwrap();
        let req: crate::protocol::Request =
            crate::protocol::read_frame_sync(&mut b).unwrap().unwrap();
        assert_eq!(req, crate::protocol::Request::Ping);
        recv_fd(&b).unwrap();
    }

    #[test]
    fn a_byte_without_an_fd_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"F").unwrap();
        assert!(recv_fd(&b).is_err());
        drop(a);
        assert!(recv_fd(&b).is_err());
    }
}
