//! The OS side of a process's stdio for the helper-shim.
//!
//! Without a terminal the process gets the FIFOs themselves (opened here,
//! handed to the runtime, closed here once it has started): the helper's
//! own log drain and stream server hold the other ends, so no byte is
//! copied by a shim. With a terminal, the runtime sends the pty master over
//! a console socket and two small threads copy between it and the FIFOs.

use super::runc::ProcIo;
use super::task::{Console, IoPaths, ProcOs, TaskError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Stack of a terminal copy thread.
const COPY_STACK: usize = 64 * 1024;

/// Opens a FIFO without blocking (the helper holds its other end), then
/// makes the descriptor blocking for the process.
fn open_fifo(path: &str, write: bool) -> Result<File, TaskError> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| TaskError::Internal(format!("opening {path}: {e}")))?;
    set_blocking(&f).map_err(|e| TaskError::Internal(format!("{path}: {e}")))?;
    Ok(f)
}

fn set_blocking(f: &File) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

fn opt(path: &str, write: bool) -> Result<Option<File>, TaskError> {
    if path.is_empty() {
        Ok(None)
    } else {
        open_fifo(path, write).map(Some)
    }
}

/// The real [`ProcOs`].
pub struct HostProcOs;

static CONSOLES: AtomicU64 = AtomicU64::new(0);

impl ProcOs for HostProcOs {
    fn open_io(&self, io: &IoPaths) -> Result<(ProcIo, Option<Console>), TaskError> {
        if io.terminal {
            // Short path: bundles are too deep for sun_path.
            let path = std::env::temp_dir().join(format!(
                "crid-pty-{}-{}.sock",
                std::process::id(),
                CONSOLES.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)
                .map_err(|e| TaskError::Internal(format!("console socket: {e}")))?;
            return Ok((ProcIo::default(), Some(Console { path, listener })));
        }
        Ok((
            ProcIo {
                stdin: opt(&io.stdin, false)?,
                stdout: opt(&io.stdout, true)?,
                stderr: opt(&io.stderr, true)?,
            },
            None,
        ))
    }

    fn finish_console(
        &self,
        console: Console,
        io: &IoPaths,
    ) -> Result<Option<Arc<File>>, TaskError> {
        let _ = std::fs::remove_file(&console.path);
        // The runtime has connected and sent the master before returning.
        console
            .listener
            .set_nonblocking(true)
            .map_err(|e| TaskError::Internal(format!("console socket: {e}")))?;
        let (conn, _) = console
            .listener
            .accept()
            .map_err(|e| TaskError::Internal(format!("no terminal from the runtime: {e}")))?;
        let _ = conn.set_nonblocking(false);
        let master = crate::sys::recv_console(&conn)
            .map_err(|e| TaskError::Internal(format!("receiving the terminal: {e}")))?;
        let master = Arc::new(master);
        if let Some(out) = opt(&io.stdout, true)? {
            let m = Arc::clone(&master);
            spawn_copy(move || copy(&mut &*m, &mut &out))?;
        }
        if let Some(input) = opt(&io.stdin, false)? {
            let m = Arc::clone(&master);
            spawn_copy(move || copy(&mut &input, &mut &*m))?;
        }
        Ok(Some(master))
    }

    fn unmount_rootfs(&self, bundle: &Path) {
        super::mount::unmount(&bundle.join("rootfs"));
    }

    fn oom_control(&self, pid: u32) -> Option<std::path::PathBuf> {
        super::oom::oom_counter(pid)
    }

    fn oom_kills(&self, oom_control: &Path) -> Option<u64> {
        let text = std::fs::read_to_string(oom_control).ok()?;
        Some(super::oom::oom_kills(&text))
    }
}

fn spawn_copy(f: impl FnOnce() + Send + 'static) -> Result<(), TaskError> {
    std::thread::Builder::new()
        .name("shim-tty".into())
        .stack_size(COPY_STACK)
        .spawn(f)
        .map(drop)
        .map_err(|e| TaskError::Internal(format!("terminal copy thread: {e}")))
}

/// Copies until end of file or an error (EIO once the terminal's last
/// process has gone).
fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
