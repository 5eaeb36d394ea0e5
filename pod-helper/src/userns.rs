//! A pod in its own user namespace (CRI `UserNamespace` mode POD).
//!
//! The helper stays host root in the node's user namespace (CNI plugins and
//! the control socket need that) and clones the *pod root*: a child in a new
//! user namespace together with the pod's new network, UTS, IPC (and, for a
//! shared PID namespace, PID) namespaces, which the kernel then makes owned
//! by the new user namespace. That ownership is what lets the containers,
//! which runc puts in the same user namespace, mount /proc, sysfs and mqueue.
//!
//! The exchange with the pod root, over two close-on-exec pipes:
//! 1. the helper writes the kubelet's uid/gid maps and pins the namespaces,
//!    then sends `m`;
//! 2. the pod root becomes uid/gid 0 of its namespace, sets the pod up from
//!    inside (loopback, hostname, sysctls: IPC sysctls can only be written
//!    by the namespace's own root) and answers `ok` or the error before
//!    closing its pipe (nothing at all: it died);
//! 3. at the end of set-up the helper sends `c`; the pod root then becomes
//!    the PID namespace's init (`crid-pod-init`), or exits when the pod has
//!    no shared PID namespace (the pins keep the namespaces alive).
//!
//! A helper that dies at any point closes its pipe end: the pod root sees
//! end-of-file and exits, so a failed set-up leaves no process behind.

use crate::setup::{self, SetupError};
use crate::sys;
use crid_common::protocol::{HelperSpec, UserNamespace};
use nix::sched::CloneFlags;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The pod root as seen from the helper.
pub struct PodRoot {
    /// Its host pid.
    pub pid: u32,
    /// Whether it stays as the PID namespace's init.
    pub is_init: bool,
    to_child: File,
    from_child: File,
}

/// The namespaces the pod root is cloned into.
fn clone_flags(spec: &HelperSpec) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER;
    if spec.namespaces.net {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    if spec.namespaces.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if spec.namespaces.pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    flags
}

/// What the pod root says when its in-pod set-up worked (anything else
/// is the error, and nothing at all means it died).
const OK: &str = "ok";

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

impl PodRoot {
    /// Clones the pod root into its new namespaces; it waits for [`PodRoot::release`].
    pub fn start(spec: &HelperSpec) -> std::io::Result<PodRoot> {
        let (to_child_r, to_child_w) = pipe()?;
        let (from_child_r, from_child_w) = pipe()?;
        let (to_child_r, from_child_w) = (File::from(to_child_r), File::from(from_child_w));
        let is_init = spec.namespaces.pid;
        let helper_ends = [to_child_w.as_raw_fd(), from_child_r.as_raw_fd()];
        let mut body = || pod_root(spec, helper_ends, &to_child_r, &from_child_w, is_init);
        let pid = sys::clone_child(clone_flags(spec), &mut body)?;
        // The child's ends: the child has its own copies.
        drop(to_child_r);
        drop(from_child_w);
        Ok(PodRoot {
            pid,
            is_init,
            to_child: File::from(to_child_w),
            from_child: File::from(from_child_r),
        })
    }

    /// A namespace file of the pod root (`/proc/<pid>/ns/<ns>`).
    pub fn ns_path(&self, ns: &str) -> std::path::PathBuf {
        format!("/proc/{}/ns/{ns}", self.pid).into()
    }

    /// Writes the user namespace's maps.
    pub fn map(&self, userns: &UserNamespace) -> std::io::Result<()> {
        sys::write_id_maps(self.pid, &userns.map_text(true), &userns.map_text(false))
    }

    /// Lets the pod root set the pod up from inside; returns its outcome.
    pub fn release(&mut self) -> Result<(), SetupError> {
        let os = |what: &'static str| {
            move |source| SetupError::Os {
                what: what.into(),
                source,
            }
        };
        self.to_child
            .write_all(b"m")
            .map_err(os("releasing the pod root"))?;
        let mut message = String::new();
        self.from_child
            .read_to_string(&mut message)
            .map_err(os("reading the pod root's set-up result"))?;
        match message.as_str() {
            OK => Ok(()),
            "" => Err(SetupError::InPod(
                "the pod root ended without a word".into(),
            )),
            _ => Err(SetupError::InPod(message)),
        }
    }

    /// Set-up is done: the pod root becomes the init, or exits (and is reaped).
    pub fn commit(mut self) -> std::io::Result<()> {
        self.to_child.write_all(b"c")?;
        if !self.is_init {
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid as i32), None)?;
        }
        Ok(())
    }
}

/// Reads one byte; `None` on end-of-file (the helper is gone) or an error.
fn next_byte(mut from_helper: &File) -> Option<u8> {
    let mut b = [0u8; 1];
    match from_helper.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// The pod root's life (runs in the cloned child; its return value is the
/// child's exit status). The `File`s are the child's copies, never dropped
/// here: the child ends without unwinding the parent's frames, so their fds
/// are closed by number.
fn pod_root(
    spec: &HelperSpec,
    helper_ends: [RawFd; 2],
    from_helper: &File,
    mut to_helper: &File,
    is_init: bool,
) -> isize {
    // The helper's pipe ends must be closed here, or the end-of-file that
    // tells of a dead helper would never come.
    for fd in helper_ends {
        let _ = nix::unistd::close(fd);
    }
    if next_byte(from_helper) != Some(b'm') {
        return 1;
    }
    if let Err(e) = become_root().and_then(|()| setup::inside_pod(spec)) {
        let _ = to_helper.write_all(e.to_string().as_bytes());
        return 1;
    }
    if to_helper.write_all(OK.as_bytes()).is_err() {
        return 1;
    }
    let _ = nix::unistd::close(to_helper.as_raw_fd());
    if next_byte(from_helper) != Some(b'c') {
        return 1;
    }
    if is_init {
        sys::reaper()
    }
    0
}

/// uid and gid 0 of the new user namespace (mapped to the kubelet's host
/// range), no supplementary groups: the pod root keeps no host identity.
fn become_root() -> Result<(), SetupError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let os = |what: &'static str| {
        move |e: nix::errno::Errno| SetupError::Os {
            what: what.into(),
            source: e.into(),
        }
    };
    setgroups(&[]).map_err(os(
        "dropping supplementary groups in the pod's user namespace",
    ))?;
    let g = Gid::from_raw(0);
    setresgid(g, g, g).map_err(os("becoming gid 0 of the pod's user namespace"))?;
    let u = Uid::from_raw(0);
    setresuid(u, u, u).map_err(os("becoming uid 0 of the pod's user namespace"))?;
    Ok(())
}
