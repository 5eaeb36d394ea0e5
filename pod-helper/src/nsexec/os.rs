//! crid-exec's OS calls that need `unsafe`, each with why it is sound;
//! crid-exec is single-threaded, so forking and changing the process's
//! signal state are safe with respect to other threads.

/// fork(2): `Ok(0)` in the child, the child's pid in the parent.
pub fn fork() -> std::io::Result<i32> {
    // SAFETY: crid-exec has one thread, so the child gets a consistent
    // copy of every lock and allocator state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Every signal back to its default action and none blocked: what a
/// freshly exec'd container process must start with (Rust ignores
/// SIGPIPE at start; SIG_IGN survives execve).
pub fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; failures (signals
        // reserved by libc) leave that signal as it was.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Joins (or creates) the session keyring `name`, as runc does so the
/// exec does not share the caller's.
pub fn join_session_keyring(name: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl reads the NUL-terminated name only.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Marks every fd from 3 up close-on-exec (runc's CloseExecFrom).
pub fn cloexec_from_3() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: one by one.
    for e in std::fs::read_dir("/proc/self/fd")?.flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if fd > 2 {
                let _ = nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
            }
        }
    }
    Ok(())
}

/// setrlimit(2).
pub fn setrlimit(resource: i32, soft: u64, hard: u64) -> std::io::Result<()> {
    let l = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: reads one rlimit struct.
    let r = unsafe { libc::setrlimit(resource as _, &l) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Ends the (forked) process at once.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no locks and runs no destructors.
    unsafe { libc::_exit(code) }
}
