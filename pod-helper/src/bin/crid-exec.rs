//! crid-exec: starts one process in a running container, natively (what
//! `runc exec --detach` does, without runc). Run by the pod helper as
//! `crid-exec <container-id> <init-pid> <bundle> <process.json>` with the
//! process's stdio as its own and a report pipe on fd 3, on which it writes
//! one line: `pid <host pid>`, `error <message>` (runc's wording) or
//! `unsupported <why>` (nothing was done; the helper uses `runc exec`).
//! The started process is re-parented to the helper (a child subreaper)
//! when crid-exec exits, so the helper reaps it.

#[path = "../nsexec/mod.rs"]
#[allow(dead_code)]
mod nsexec;

use nsexec::{os, Config, Process};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// What went wrong, reported to the helper.
enum Fail {
    Unsupported(String),
    Error(String),
}

fn main() {
    // SAFETY: fd 3 is the report pipe the helper passed; nothing else here
    // owns it.
    let report = unsafe { std::fs::File::from_raw_fd(3) };
    let args: Vec<String> = std::env::args().collect();
    let line = match run(&args) {
        Ok(pid) => format!("pid {pid}\n"),
        Err(Fail::Unsupported(why)) => format!("unsupported {}\n", why.replace('\n', " ")),
        Err(Fail::Error(m)) => format!("error {}\n", m.replace('\n', " ")),
    };
    let mut report = report;
    let _ = report.write_all(line.as_bytes());
}

fn run(args: &[String]) -> Result<i32, Fail> {
    let [_, id, pid, bundle, process] = args else {
        return Err(Fail::Unsupported(
            "usage: crid-exec <container-id> <init-pid> <bundle> <process.json>".into(),
        ));
    };
    let err = |what: &str, e: &dyn std::fmt::Display| Fail::Error(format!("{what}: {e}"));
    let p: Process = serde_json::from_slice(
        &std::fs::read(process).map_err(|e| err("reading the process spec", &e))?,
    )
    .map_err(|e| err("parsing the process spec", &e))?;
    let c: Config = serde_json::from_slice(
        &std::fs::read(format!("{bundle}/config.json"))
            .map_err(|e| err("reading config.json", &e))?,
    )
    .map_err(|e| err("parsing config.json", &e))?;
    if let Some(why) = nsexec::unsupported(&p, &c) {
        return Err(Fail::Unsupported(why));
    }
    if p.args.is_empty() {
        return Err(Fail::Error(nsexec::start_error("args must not be empty")));
    }
    let env = nsexec::environment(&p.env).map_err(|e| Fail::Error(nsexec::start_error(&e)))?;
    let filter = match &c.linux.seccomp {
        Some(s) => {
            Some(nsexec::seccomp::compile(s).map_err(|e| Fail::Error(nsexec::start_error(&e)))?)
        }
        None => None,
    };
    let init: i32 = pid
        .parse()
        .map_err(|_| Fail::Unsupported(format!("bad pid {pid}")))?;

    // Namespaces of the init that differ from ours, opened before any is
    // joined (after joining the mount namespace /proc/<pid> may be gone).
    let mut nss: Vec<(&str, OwnedFd)> = Vec::new();
    for ns in nsexec::NAMESPACES {
        let theirs = format!("/proc/{init}/ns/{ns}");
        let (Ok(a), Ok(b)) = (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{ns}")),
        ) else {
            continue;
        };
        if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| err(&format!("opening {theirs}"), &e))?;
        nss.push((ns, f.into()));
    }

    // Cgroups first, while we are host root in the host's namespaces.
    let cg = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
        .map_err(|e| err("reading the init's cgroups", &e))?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| err("reading mountinfo", &e))?;
    let me = std::process::id().to_string();
    for procs in nsexec::cgroup_procs(&cg, &mi) {
        std::fs::write(&procs, &me).map_err(|e| {
            Fail::Error(nsexec::start_error(&format!("joining cgroup {procs}: {e}")))
        })?;
    }
    // rlimits as runc's parent sets them (prlimit on the child, before it
    // runs anything): inherited by the child from here.
    for r in &p.rlimits {
        let Some(res) = nsexec::rlimit_resource(&r.kind) else {
            return Err(Fail::Error(nsexec::start_error(&format!(
                "unknown rlimit {}",
                r.kind
            ))));
        };
        os::setrlimit(res, r.soft, r.hard).map_err(|e| {
            Fail::Error(nsexec::start_error(&format!(
                "setting rlimits for process: error setting rlimit type {}: {e}",
                res
            )))
        })?;
    }
    if let Some(want) = p.oom_score_adj {
        // Lower than ours cannot be set without CAP_SYS_RESOURCE: raised to
        // ours, as crid does for containers (restrict_oom_score_adj).
        let own = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(want);
        std::fs::write("/proc/self/oom_score_adj", want.max(own).to_string())
            .map_err(|e| Fail::Error(nsexec::start_error(&format!("oom_score_adj: {e}"))))?;
    }
    let joined_user = nss.iter().any(|(n, _)| *n == "user");
    for (ns, fd) in &nss {
        nix::sched::setns(fd, nix::sched::CloneFlags::empty()).map_err(|e| {
            Fail::Error(nsexec::start_error(&format!(
                "failed to setns to {ns}: {e}"
            )))
        })?;
    }
    drop(nss);

    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", &e))?;
    let child = os::fork().map_err(|e| err("fork", &e))?;
    if child == 0 {
        drop(err_r);
        let msg = match child_main(id, &p, env, filter.as_ref(), joined_user) {
            Err(m) => m,
            Ok(never) => match never {},
        };
        let mut w = std::fs::File::from(err_w);
        let _ = w.write_all(msg.as_bytes());
        os::exit_now(1);
    }
    drop(err_w);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(child);
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    Err(Fail::Error(nsexec::start_error(&msg)))
}

/// Real files for the PATH lookup.
struct RealFiles;

impl nsexec::Files for RealFiles {
    fn executable(&self, path: &str) -> Result<bool, i32> {
        let m = std::fs::metadata(path).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
        Ok(!m.is_dir() && m.mode() & 0o111 != 0)
    }
}

fn errno_msg(e: nix::errno::Errno) -> String {
    nsexec::errno_text(e as i32)
}

/// In the container's namespaces: runc's setns init, then execve.
fn child_main(
    id: &str,
    p: &Process,
    mut env: Vec<(String, String)>,
    filter: Option<&libseccomp::ScmpFilterContext>,
    joined_user: bool,
) -> Result<std::convert::Infallible, String> {
    use nix::unistd::{Gid, Uid};
    os::reset_signals();
    // nsexec's stage 2: its own session, root of the (joined) user namespace.
    let _ = nix::unistd::setsid();
    if joined_user {
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| format!("setresgid: {}", errno_msg(e)))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| format!("setresuid: {}", errno_msg(e)))?;
    }
    // containerd never sets runc's --no-new-keyring for an exec.
    match os::join_session_keyring(&format!("_ses.{id}")) {
        Err(e) if e.raw_os_error() != Some(libc::ENOSYS) => {
            return Err(format!("unable to join session keyring: {e}"))
        }
        _ => {}
    }
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl: {}", errno_msg(e)))?;
    }
    // Without no_new_privs seccomp needs CAP_SYS_ADMIN: before caps drop.
    if let (Some(f), false) = (filter, p.no_new_privileges) {
        f.load()
            .map_err(|e| format!("error loading seccomp filter: {e}"))?;
    }
    // finalizeNamespace.
    os::cloexec_from_3().map_err(|e| format!("error closing exec fds: {e}"))?;
    let chdir_err = |e: nix::errno::Errno| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            p.cwd,
            errno_msg(e)
        )
    };
    let mut chdir_later = false;
    if !p.cwd.is_empty() {
        match nix::unistd::chdir(p.cwd.as_str()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => chdir_later = true,
            Err(e) => return Err(chdir_err(e)),
        }
    }
    let supported = caps::runtime::thread_all_supported();
    let none = nsexec::Capabilities::default();
    let want = p.capabilities.as_ref().unwrap_or(&none);
    let bounding = nsexec::cap_set(&want.bounding, &supported);
    for c in &supported {
        if !bounding.contains(c) {
            caps::drop(None, caps::CapSet::Bounding, *c)
                .map_err(|e| format!("apply bounding set: {e}"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {}", errno_msg(e)))?;
    // setupUser (numeric uid:gid: no group file lookups apply).
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let home = nsexec::home_of(passwd.as_deref(), p.user.uid);
    fix_stdio(p.user.uid)?;
    let setgroups = std::fs::read_to_string("/proc/self/setgroups").unwrap_or_default();
    if setgroups.trim() != "deny" {
        let g: Vec<Gid> = nsexec::groups(&p.user.additional_gids)
            .into_iter()
            .map(Gid::from_raw)
            .collect();
        nix::unistd::setgroups(&g).map_err(|e| format!("setgroups: {}", errno_msg(e)))?;
    }
    let (gid, uid) = (Gid::from_raw(p.user.gid), Uid::from_raw(p.user.uid));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid: {}", errno_msg(e)))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid: {}", errno_msg(e)))?;
    if !env.iter().any(|(k, v)| k == "HOME" && !v.is_empty()) {
        match env.iter_mut().find(|(k, _)| k == "HOME") {
            Some(h) => h.1 = home,
            None => env.push(("HOME".into(), home)),
        }
    }
    if chdir_later {
        nix::unistd::chdir(p.cwd.as_str()).map_err(chdir_err)?;
    }
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("keepcaps: {}", errno_msg(e)))?;
    // Inheritable first (effective is empty after a switch to non-root),
    // then effective, then permitted (effective must stay within it).
    for (set, names) in [
        (caps::CapSet::Inheritable, &want.inheritable),
        (caps::CapSet::Effective, &want.effective),
        (caps::CapSet::Permitted, &want.permitted),
    ] {
        caps::set(None, set, &nsexec::cap_set(names, &supported))
            .map_err(|e| format!("apply caps: {e}"))?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| format!("apply ambient caps: {e}"))?;
    for c in nsexec::cap_set(&want.ambient, &supported) {
        caps::raise(None, caps::CapSet::Ambient, c)
            .map_err(|e| format!("apply ambient caps: {e}"))?;
    }
    apply_apparmor(&p.apparmor_profile)?;
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let name = nsexec::look_path(&p.args[0], path_var, &RealFiles)?;
    nix::unistd::faccessat(
        None,
        name.as_str(),
        nix::unistd::AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .map_err(|e| format!("exec {name}: {}", errno_msg(e)))?;
    let cstr = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("{s:?} contains NUL"));
    let argv: Vec<std::ffi::CString> = p.args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let envp: Vec<std::ffi::CString> = env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let path = cstr(&name)?;
    // As late as possible with no_new_privs: few syscalls after it.
    if let (Some(f), true) = (filter, p.no_new_privileges) {
        f.load()
            .map_err(|e| format!("error loading seccomp filter: {e}"))?;
    }
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(format!("exec {name}: {}", errno_msg(e)))
}

/// runc's fixStdioPermissions: stdio not /dev/null and owned by another
/// uid is chowned to the process's uid (errors a user namespace makes
/// unavoidable are ignored).
fn fix_stdio(uid: u32) -> Result<(), String> {
    let null = nix::sys::stat::stat("/dev/null").map_err(|e| format!("stat /dev/null: {e}"))?;
    for fd in 0..3 {
        let s = nix::sys::stat::fstat(fd).map_err(|e| format!("fstat {fd}: {e}"))?;
        if s.st_uid == uid || s.st_rdev == null.st_rdev {
            continue;
        }
        match nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(s.st_gid)),
        ) {
            Ok(())
            | Err(
                nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM | nix::errno::Errno::EROFS,
            ) => {}
            Err(e) => return Err(format!("fchown {fd}: {e}")),
        }
    }
    Ok(())
}

/// runc's apparmor.ApplyProfile: `exec <profile>` for the next execve,
/// nothing when no profile is set or AppArmor is not enabled.
fn apply_apparmor(profile: &str) -> Result<(), String> {
    if profile.is_empty() {
        return Ok(());
    }
    let enabled = std::path::Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|b| b.first() == Some(&b'Y'));
    if !enabled {
        return Ok(());
    }
    let new = "/proc/self/attr/apparmor/exec";
    let attr = if std::path::Path::new(new).exists() {
        new
    } else {
        "/proc/self/attr/exec"
    };
    let f = std::fs::OpenOptions::new().write(true).open(attr);
    f.and_then(|mut f| f.write_all(format!("exec {profile}").as_bytes()))
        .map_err(|e| format!("apparmor failed to apply profile: {e}"))?;
    Ok(())
}
