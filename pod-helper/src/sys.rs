//! The helper's OS calls. All `unsafe` of the helper lives here, each block
//! with the reason it is sound.

use crid_common::cni_exec::{run_command, PluginOutput, PluginRunner};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Name the reaper gives itself, checked before it is ever killed by pid.
pub const REAPER_NAME: &str = "crid-pod-init";

/// Pins this thread's namespace `ns` by bind-mounting it onto `pin`.
pub fn pin(ns: &str, pin: &Path) -> std::io::Result<()> {
    pin_from(Path::new(&format!("/proc/thread-self/ns/{ns}")), pin)
}

/// Pins the namespace file `src` (e.g. `/proc/<pid>/ns/user`) by
/// bind-mounting it onto `pin`, which keeps the namespace alive.
pub fn pin_from(src: &Path, pin: &Path) -> std::io::Result<()> {
    File::create(pin)?;
    nix::mount::mount(
        Some(src),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(pin);
        std::io::Error::from(e)
    })
}

/// Unmounts and removes a pin; best effort (used on undo).
pub fn unpin(pin: &Path) {
    let _ = nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(pin);
}

/// Sets IFF_UP on `lo` in the current netns with the classic ioctl.
pub fn loopback_up() -> std::io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value, and the name
    // "lo\0" fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the ifreq we pass,
    // which lives for the duration of the calls; the fd is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks for the lowest oom_score_adj; without CAP_SYS_RESOURCE a value below
/// the current one is refused, so the current value is kept (as containerd's
/// restrict_oom_score_adj does). Returns a note for the log.
pub fn lower_oom_score_adj() -> Option<String> {
    const PATH: &str = "/proc/self/oom_score_adj";
    match std::fs::write(PATH, "-999") {
        Ok(()) => Some("oom_score_adj set to -999".into()),
        Err(e) => {
            let current = std::fs::read_to_string(PATH).unwrap_or_default();
            Some(format!(
                "oom_score_adj -999 refused ({e}); kept the current {}",
                current.trim()
            ))
        }
    }
}

/// Runs CNI plugins in the host netns (bridge creates the bridge in the
/// netns it runs in), while the helper itself sits in the pod's netns.
pub struct HostNetnsRunner<'a> {
    /// An fd of the host netns, opened before unsharing.
    pub host_net: &'a File,
}

impl PluginRunner for HostNetnsRunner<'_> {
    fn exec(
        &self,
        bin: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<PluginOutput> {
        let fd = self.host_net.as_raw_fd();
        let mut cmd = std::process::Command::new(bin);
        // SAFETY: the closure runs between fork and exec and only calls
        // setns(2), which is async-signal-safe; it allocates nothing and the
        // fd stays open in the child until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_command(cmd, env, stdin)
    }
}

/// Creates a PID namespace and forks its init; returns the init's host pid.
/// Must be called while the helper is single-threaded.
pub fn start_reaper() -> std::io::Result<u32> {
    use nix::sched::CloneFlags;
    // unshare(CLONE_NEWPID) only changes where *children* go, and while it
    // is in effect the kernel refuses new threads (EINVAL): the helper goes
    // back to its own PID namespace for children once the init is forked.
    let own = File::open("/proc/self/ns/pid")?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
    // SAFETY: the helper has started no threads yet (connection threads come
    // after set-up), so the child is a faithful single-threaded copy and may
    // run arbitrary code.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw() as u32,
        Ok(nix::unistd::ForkResult::Child) => reaper(),
        Err(e) => {
            let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
            return Err(e.into());
        }
    };
    if let Err(e) = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID) {
        kill_reaper(child, true);
        return Err(e.into());
    }
    Ok(child)
}

/// Clones a child that runs `body` in the new namespaces `flags`; returns
/// its pid. With `CLONE_NEWUSER` the other new namespaces are owned by the
/// new user namespace; with `CLONE_NEWPID` the child is pid 1 of a new PID
/// namespace. Must be called while the helper is single-threaded.
pub fn clone_child(
    flags: nix::sched::CloneFlags,
    body: &mut dyn FnMut() -> isize,
) -> std::io::Result<u32> {
    // The child runs on this buffer. Without CLONE_VM it gets its own copy
    // of the address space, so the parent may free the buffer at once.
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the helper has started no threads yet (connection threads
    // come after set-up), so, as after fork(2), the child is a faithful
    // single-threaded copy that may run arbitrary code; `body` and the
    // stack outlive the call in the parent and are copies in the child.
    let pid = unsafe { nix::sched::clone(Box::new(body), &mut stack, flags, Some(libc::SIGCHLD)) }?;
    Ok(pid.as_raw() as u32)
}

/// Writes the uid and gid maps of the user namespace process `pid` is in.
/// setgroups(2) stays allowed there: the writer is privileged, and the
/// containers' runtime must set supplementary groups.
pub fn write_id_maps(pid: u32, uid_map: &str, gid_map: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)
}

/// pid 1 of the pod's PID namespace: reaps orphans until killed.
pub fn reaper() -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let _ = nix::sys::prctl::set_name(&std::ffi::CString::new(REAPER_NAME).unwrap_or_default());
    // Nothing inherited stays open: not crid's report pipe, not the netns fd.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    for fd in 3..1024 {
        let _ = nix::unistd::close(fd);
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    // Blocked, SIGCHLD stays pending even though its default action is to
    // ignore it, so sigwait below cannot miss one.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let _ = set.wait();
    }
}

/// SIGKILLs the reaper. `own_child`: forked by this helper and not yet
/// reaped, so the pid cannot have been reused (and the reaper may not have
/// named itself yet); otherwise the pid must still carry the reaper's name.
pub fn kill_reaper(pid: u32, own_child: bool) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if own_child || comm.trim() == REAPER_NAME {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Our own child on a fresh set-up; after a re-adoption it is not,
        // and this returns ECHILD at once.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }
}

/// glibc malloc arenas the helper may use.
const MALLOC_ARENAS: i32 = 1;

/// Limits glibc to [`MALLOC_ARENAS`] malloc arena; call first, before any
/// thread exists. glibc otherwise gives each thread that allocates (control
/// connections, log drains, and as the pod's shim the ttrpc readers,
/// writers and workers, the reaper, the event forwarder) an arena of its
/// own, each keeping the pages it once touched: per pod that is most of the
/// helper's private memory. The helper's allocations are few and small, so
/// one arena's lock is never contended. Returns a note when refused.
pub fn limit_malloc_arenas() -> Option<String> {
    // SAFETY: mallopt only changes malloc's parameters; it runs before any
    // other thread exists, so no allocation is concurrent, and
    // M_ARENA_MAX takes any positive count.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    (ok != 1).then(|| "mallopt(M_ARENA_MAX) refused; glibc's default arenas stay".to_string())
}

/// Hands the heap's free pages back to the kernel. glibc returns memory by
/// itself only from the top of the heap; what set-up and a container's
/// create/start/delete allocated and freed below a live allocation stays
/// resident otherwise. Cheap (one walk of the one arena); called after
/// those bursts, not on a hot path.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes the arena's lock and touches only memory
    // malloc owns that no live allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps only the capabilities later duties need: CAP_SYS_ADMIN and
/// CAP_SYS_PTRACE (setns into the pod's and containers' namespaces for
/// exec/port-forward), CAP_KILL (ending the reaper). Returns a note.
pub fn drop_capabilities() -> Option<String> {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = [
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_KILL,
    ]
    .into_iter()
    .collect();
    let mut failed = Vec::new();
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for c in bounding.difference(&keep) {
            if let Err(e) = caps::drop(None, CapSet::Bounding, *c) {
                failed.push(format!("{c}: {e}"));
            }
        }
    }
    let inheritable = caps::CapsHashSet::new();
    if let Err(e) = caps::set(None, CapSet::Inheritable, &inheritable) {
        failed.push(format!("inheritable: {e}"));
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set).unwrap_or_default();
        let target: caps::CapsHashSet = now.intersection(&keep).copied().collect();
        if let Err(e) = caps::set(None, set, &target) {
            failed.push(format!("{set:?}: {e}"));
        }
    }
    if failed.is_empty() {
        None
    } else {
        Some(format!("dropping capabilities: {}", failed.join(", ")))
    }
}

/// Points stdout at /dev/null once the report is written, so crid's pipe
/// closes and no later write can block on it.
pub fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Sets a terminal's window size (TIOCSWINSZ) on its master side.
pub fn set_window_size(master: &File, width: u16, height: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the winsize we pass, which lives for the
    // duration of the call; the fd is open (borrowed from `master`).
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A new eventfd (close-on-exec), as a file to read its counter from.
pub fn eventfd() -> std::io::Result<File> {
    // SAFETY: eventfd(2) takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns, so wrapping it in a File is sound.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is open and owned by no one else.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Receives the terminal master the runtime sends with its name (runc's
/// `SendFile`: the pty's path as data, the fd as SCM_RIGHTS).
pub fn recv_console(conn: &std::os::unix::net::UnixStream) -> std::io::Result<File> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{FromRawFd, RawFd};
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(conn),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<RawFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(f) = c {
            fds.extend(f);
        }
    }
    let mut it = fds.into_iter();
    let first = it.next().ok_or_else(|| {
        std::io::Error::other(format!("no terminal fd in a {}-byte message", msg.bytes))
    })?;
    for extra in it {
        // SAFETY: received just now and owned by no one else.
        drop(unsafe { File::from_raw_fd(extra) });
    }
    // SAFETY: as above: a fresh descriptor from SCM_RIGHTS, owned here.
    Ok(unsafe { File::from_raw_fd(first) })
}

/// Makes `fd` the child's fd 3 (crid-exec's report pipe).
pub fn pass_as_fd3(cmd: &mut std::process::Command, fd: std::os::fd::RawFd) {
    // SAFETY: dup2 is async-signal-safe and touches only the child's fd
    // table; `fd` stays open in the parent until the child has started.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
