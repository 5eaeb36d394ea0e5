//! The two OS calls of user-namespace support that have no safe wrapper:
//! `mount_setattr(2)` with `MOUNT_ATTR_IDMAP` (rustix has the rest of the new
//! mount API, not this one), and a throwaway user namespace for the support
//! probe (crid is multi-threaded, so it is made by a forked child that only
//! makes async-signal-safe calls). All `unsafe` of the module is here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// `struct mount_attr` of linux/mount.h (MOUNT_ATTR_SIZE_VER0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_IDMAP`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Makes the detached mount `tree` (from `open_tree(OPEN_TREE_CLONE)`)
/// idmapped with the user namespace `userns`: files owned by host id `h`
/// appear owned by the id that `h` has inside that namespace, mapped on.
/// `recursive`: every mount of the cloned tree too.
pub fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr`,
    // a live repr(C) value laid out as the kernel's struct mount_attr; the
    // path is a NUL-terminated static empty string used with AT_EMPTY_PATH,
    // and both fds are borrowed, so open, for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 },
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new user namespace with the given uid/gid maps, held by an fd of its
/// `/proc/<pid>/ns/user` (the process that made it is gone on return).
pub fn throwaway_userns(map: &str) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_w_raw, go_r_raw) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let (ready_r_raw, go_w_raw) = (ready_r.as_raw_fd(), go_w.as_raw_fd());
    // SAFETY: crid is multi-threaded, so the child may only make
    // async-signal-safe calls: close(2), unshare(2), write(2), read(2) and
    // _exit(2) on raw fds it inherited, with buffers on its own stack; it
    // allocates nothing, takes no lock and never returns into Rust code (no
    // destructors run in it).
    let child = match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            // The parent's ends: holding go_w would keep the read below
            // from ever seeing end-of-file.
            libc::close(ready_r_raw);
            libc::close(go_w_raw);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(ready_w_raw, (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            // Blocks until the parent has opened the namespace and closed go_w.
            libc::read(go_r_raw, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0)
        },
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut ok = [0u8; 1];
        let n = nix::unistd::read(ready_r.as_raw_fd(), &mut ok)?;
        if n != 1 || ok[0] != 1 {
            return Err(io::Error::other(
                "unshare(CLONE_NEWUSER) failed in the probe child",
            ));
        }
        let pid = child.as_raw();
        std::fs::write(format!("/proc/{pid}/uid_map"), map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map)?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    drop(go_w);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}
