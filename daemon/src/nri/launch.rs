//! Starts a pre-installed plugin with its end of a socket pair as fd 3 (NRI's
//! convention: `NRI_PLUGIN_SOCKET=3`). All `unsafe` of the NRI module is here.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Spawns `path` with `peer` as fd 3 and NRI's environment; crid's other
/// descriptors stay closed in the child (they are close-on-exec).
pub fn spawn(
    path: &Path,
    idx: &str,
    base: &str,
    peer: OwnedFd,
) -> std::io::Result<std::process::Child> {
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NRI_PLUGIN_NAME", base)
        .env("NRI_PLUGIN_IDX", idx)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null());
    let fd = peer.as_raw_fd();
    // SAFETY: runs between fork and exec and only calls dup2(2) (and
    // fcntl(2) inside it), which are async-signal-safe and allocate nothing;
    // `fd` stays open in the parent until spawn returns (`peer` is dropped
    // after it). dup2 clears close-on-exec on the new descriptor 3.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already in place: only close-on-exec must go.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(peer);
    child
}
