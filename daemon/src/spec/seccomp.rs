//! Seccomp (issue 11): the filter runc installs in a container.
//!
//! Which filter, mirroring containerd's CRI plugin 1.6/1.7
//! (`generateSeccompSpecOpts`) and the CRI comments:
//! - a privileged container gets none, whatever it asked for;
//! - the request is the `seccomp` field, else the deprecated
//!   `seccomp_profile_path` string ([`super::security_profile`]); unset ("" in
//!   the CRI's words: unconfined) and `Unconfined` get none. (The kubelet sends
//!   `RuntimeDefault` itself when its SeccompDefault setting is on; crid has no
//!   `unset_seccomp_profile` option.)
//! - on a kernel without seccomp anything else is FailedPrecondition;
//! - `RuntimeDefault` is crid's built-in profile ([`default_profile`]): the
//!   allow list of containerd's / moby's default profile (containerd 2.x's
//!   list: io_uring and AF_VSOCK/AF_ALG sockets are refused), everything else
//!   fails with EPERM;
//! - `Localhost` reads the JSON profile at the absolute path `localhost_ref`
//!   on the node, in the docker/containerd format (`defaultAction`,
//!   `defaultErrnoRet`, `architectures` or `archMap`, `flags`, `listenerPath`,
//!   `listenerMetadata`, `syscalls` with `name`/`names`, `action`, `errnoRet`,
//!   `args`, `includes`/`excludes` of `caps`, `arches`, `minKernel`); the OCI
//!   `LinuxSeccomp` format is a subset of it. A missing, unreadable or
//!   malformed file, an unknown action, operator, architecture or flag is an
//!   InvalidArgument naming the path. containerd 1.6 reads the file as the
//!   OCI struct and silently drops `includes`/`excludes` (applying such rules
//!   unconditionally); crid evaluates them like docker and CRI-O.
//!
//! Both profiles are evaluated the same way against the container:
//! `includes.caps` needs every listed capability in the container's bounding
//! set, `excludes.caps` drops a rule when any is held; `arches` compare with
//! the node's architecture in libseccomp's names (`amd64`, `arm64`, `s390x`, ...);
//! `minKernel` with the node's kernel release. `archMap` picks the entry of the
//! node's architecture (x86_64 adds x86 and x32, aarch64 adds arm).

use super::security_profile::{requested, Requested};
use super::{HostFacts, HostView, KernelVersion, SpecError};
use crid_proto::cri::LinuxContainerSecurityContext;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// EPERM: what a syscall outside the default profile returns.
const EPERM: u32 = 1;
/// ENOSYS: what clone3 returns without CAP_SYS_ADMIN, so that libcs fall back
/// to clone (whose flags the profile can inspect; clone3's it cannot).
const ENOSYS: u32 = 38;
/// Namespace flags of clone(2) (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET): without CAP_SYS_ADMIN, clone may set none.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 | 0x0200_0000 | 0x7C00_0000;
/// Socket families the default profile refuses: AF_ALG (38) and AF_VSOCK (40).
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The seccomp filter for this container: `None` runs it unconfined.
/// `caps` is the container's bounding set (after privileged/add/drop).
pub fn linux_seccomp(
    sc: &LinuxContainerSecurityContext,
    caps: &[Capability],
    host: &HostFacts,
    view: &dyn HostView,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if sc.privileged {
        return Ok(None);
    }
    #[allow(deprecated)]
    let asked = requested(sc.seccomp.as_ref(), &sc.seccomp_profile_path, "seccomp")?;
    let profile = match asked {
        Requested::Unset | Requested::Unconfined => return Ok(None),
        _ if !host.seccomp_enabled => {
            return Err(SpecError::FailedPrecondition(
                "seccomp profile requested but the node's kernel has no seccomp".into(),
            ))
        }
        Requested::RuntimeDefault => default_profile(),
        Requested::Localhost(path) => return localhost(&path, caps, host, view).map(Some),
    };
    let target = Target::of(caps, host);
    profile
        .resolve(&target)
        .map(Some)
        .map_err(|e| SpecError::InvalidArgument(format!("crid's default seccomp profile: {e}")))
}

/// Largest profile file crid reads (moby's default is 13 KiB).
pub const MAX_PROFILE_BYTES: u64 = 4 << 20;

fn localhost(
    path: &str,
    caps: &[Capability],
    host: &HostFacts,
    view: &dyn HostView,
) -> Result<LinuxSeccomp, SpecError> {
    let bad = |what: String| SpecError::InvalidArgument(format!("seccomp profile {path}: {what}"));
    super::validate::node_file_path(path, "seccomp profile path")?;
    let bytes = view
        .read_profile(Path::new(path))
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let profile = parse_profile(&bytes).map_err(|e| bad(format!("not a seccomp profile: {e}")))?;
    profile.resolve(&Target::of(caps, host)).map_err(bad)
}

/// A seccomp profile in the docker/containerd JSON format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Profile {
    /// What a syscall no rule matches gets (`SCMP_ACT_ERRNO`, ...).
    pub default_action: String,
    /// The errno of `defaultAction: SCMP_ACT_ERRNO` (runc: EPERM when unset).
    pub default_errno_ret: Option<u32>,
    /// Architectures the filter covers (exclusive with `archMap`).
    pub architectures: Vec<String>,
    /// Per native architecture, the architectures to cover.
    pub arch_map: Vec<ArchMapEntry>,
    /// `SECCOMP_FILTER_FLAG_*` flags.
    pub flags: Vec<String>,
    /// Socket of a seccomp agent, for `SCMP_ACT_NOTIFY`.
    pub listener_path: String,
    /// Opaque data for that agent.
    pub listener_metadata: String,
    /// The rules.
    pub syscalls: Vec<Rule>,
}

/// One `archMap` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ArchMapEntry {
    /// A native architecture (`SCMP_ARCH_X86_64`).
    pub architecture: String,
    /// What to cover besides it.
    pub sub_architectures: Vec<String>,
}

/// One rule: syscalls, an action, argument conditions, and when it applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    /// One syscall (exclusive with `names`).
    pub name: String,
    /// The syscalls.
    pub names: Vec<String>,
    /// `SCMP_ACT_*`.
    pub action: String,
    /// The errno of `SCMP_ACT_ERRNO` (or the value of `SCMP_ACT_TRACE`).
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments (all must hold).
    pub args: Vec<Arg>,
    /// The rule applies only when all of these hold.
    pub includes: Filter,
    /// The rule is dropped when any of these holds.
    pub excludes: Filter,
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Arg {
    /// Argument index, 0..=5.
    pub index: usize,
    /// Compared value (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// Second value (`SCMP_CMP_MASKED_EQ`: what the masked argument must equal).
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: String,
}

/// `includes` / `excludes` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities (`CAP_SYS_ADMIN`), checked against the bounding set.
    pub caps: Vec<String>,
    /// Native architectures in libseccomp's names (`amd64`, `arm64`, ...).
    pub arches: Vec<String>,
    /// Kernel release (`4.8`).
    pub min_kernel: String,
}

/// Reads a profile. A JSON `null` member counts as absent (docker's own
/// profiles write `"args": null`, `"subArchitectures": null`).
pub fn parse_profile(bytes: &[u8]) -> serde_json::Result<Profile> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes)?;
    drop_nulls(&mut v);
    serde_json::from_value(v)
}

fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// What a profile is evaluated against.
struct Target {
    caps: Vec<Capability>,
    /// (libseccomp native name, seccomp arch) of the node, when known.
    arch: Option<(&'static str, &'static str)>,
    kernel: Option<KernelVersion>,
}

impl Target {
    fn of(caps: &[Capability], host: &HostFacts) -> Target {
        Target {
            caps: caps.to_vec(),
            arch: native_arch(&host.arch),
            kernel: host.kernel,
        }
    }

    fn holds(&self, cap: &str) -> bool {
        super::security::parse_capability(cap).is_ok_and(|c| self.caps.contains(&c))
    }

    fn on_one_of(&self, arches: &[String]) -> bool {
        self.arch
            .is_some_and(|(native, _)| arches.iter().any(|a| a == native))
    }

    fn kernel_at_least(&self, min: &str) -> Result<bool, String> {
        let min = KernelVersion::parse(min).ok_or_else(|| format!("bad minKernel {min:?}"))?;
        let have = self
            .kernel
            .ok_or("minKernel used but the node's kernel version is unknown")?;
        Ok(have >= min)
    }
}

/// The node's architecture (Rust's name, `std::env::consts::ARCH`) as
/// (libseccomp native name, seccomp arch).
fn native_arch(arch: &str) -> Option<(&'static str, &'static str)> {
    Some(match arch {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("x86", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "powerpc64" => ("ppc64", "SCMP_ARCH_PPC64"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "loongarch64" => ("loong64", "SCMP_ARCH_LOONGARCH64"),
        _ => return None,
    })
}

fn action(s: &str) -> Result<LinuxSeccompAction, String> {
    LinuxSeccompAction::from_str(s).map_err(|_| format!("unknown action {s:?}"))
}

fn arch(s: &str) -> Result<Arch, String> {
    Arch::from_str(s).map_err(|_| format!("unknown architecture {s:?}"))
}

impl Profile {
    /// The OCI filter for `t`. Every rule is checked, also those `t` drops,
    /// so a profile's mistakes show on every node.
    fn resolve(&self, t: &Target) -> Result<LinuxSeccomp, String> {
        if self.default_action.is_empty() {
            return Err("no defaultAction".into());
        }
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err("both architectures and archMap are set; use one".into());
        }
        let mut arches = self
            .architectures
            .iter()
            .map(|a| arch(a))
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &self.arch_map {
            let main = arch(&entry.architecture)?;
            let subs = entry
                .sub_architectures
                .iter()
                .map(|a| arch(a))
                .collect::<Result<Vec<_>, _>>()?;
            if t.arch
                .is_some_and(|(_, native)| native == entry.architecture)
            {
                arches.push(main);
                arches.extend(subs);
            }
        }
        let flags = self
            .flags
            .iter()
            .map(|f| LinuxSeccompFilterFlag::from_str(f).map_err(|_| format!("unknown flag {f:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut syscalls = Vec::new();
        for (i, rule) in self.syscalls.iter().enumerate() {
            let call = rule.to_oci().map_err(|e| format!("syscalls[{i}]: {e}"))?;
            if rule.applies(t).map_err(|e| format!("syscalls[{i}]: {e}"))? {
                syscalls.push(call);
            }
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(action(&self.default_action)?);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!arches.is_empty()).then_some(arches));
        out.set_flags((!flags.is_empty()).then_some(flags));
        out.set_listener_path(
            (!self.listener_path.is_empty()).then(|| PathBuf::from(&self.listener_path)),
        );
        out.set_listener_metadata(
            (!self.listener_metadata.is_empty()).then(|| self.listener_metadata.clone()),
        );
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }
}

impl Rule {
    /// This rule as an OCI syscall rule (checked whether it applies or not).
    fn to_oci(&self) -> Result<LinuxSyscall, String> {
        let names = match (self.name.is_empty(), self.names.is_empty()) {
            (false, false) => return Err("both name and names are set; use one".into()),
            (false, true) => vec![self.name.clone()],
            (true, false) => self.names.clone(),
            (true, true) => return Err("no syscall name".into()),
        };
        if let Some(n) = names.iter().find(|n| n.is_empty()) {
            return Err(format!("empty syscall name {n:?}"));
        }
        let mut args = Vec::with_capacity(self.args.len());
        for a in &self.args {
            if a.index > 5 {
                return Err(format!("argument index {} is not 0..=5", a.index));
            }
            let op = LinuxSeccompOperator::from_str(&a.op)
                .map_err(|_| format!("unknown operator {:?}", a.op))?;
            let arg = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .value_two(a.value_two)
                .op(op)
                .build()
                .map_err(|e| format!("argument {}: {e}", a.index))?;
            args.push(arg);
        }
        let mut call = LinuxSyscall::default();
        call.set_names(names);
        call.set_action(action(&self.action)?);
        call.set_errno_ret(self.errno_ret);
        call.set_args((!args.is_empty()).then_some(args));
        Ok(call)
    }

    /// docker's semantics: excludes first (any match drops the rule), then
    /// includes (every condition must hold).
    fn applies(&self, t: &Target) -> Result<bool, String> {
        let (inc, exc) = (&self.includes, &self.excludes);
        if t.on_one_of(&exc.arches) || exc.caps.iter().any(|c| t.holds(c)) {
            return Ok(false);
        }
        if !exc.min_kernel.is_empty() && t.kernel_at_least(&exc.min_kernel)? {
            return Ok(false);
        }
        if !inc.arches.is_empty() && !t.on_one_of(&inc.arches) {
            return Ok(false);
        }
        if !inc.caps.iter().all(|c| t.holds(c)) {
            return Ok(false);
        }
        if !inc.min_kernel.is_empty() && !t.kernel_at_least(&inc.min_kernel)? {
            return Ok(false);
        }
        Ok(true)
    }
}

// --- crid's RuntimeDefault profile -------------------------------------------

/// Allowed for every container (containerd 2.x / moby default allow list;
/// names the node's libseccomp does not know are skipped by runc).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "_llseek", "_newselect", "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk",
    "cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
    "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
    "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64",
    "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "get_robust_list",
    "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage", "getsid",
    "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
    "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link",
    "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr", "lremovexattr",
    "lseek", "lsetxattr", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "lstat",
    "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "set_robust_list",
    "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
    "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
    "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// Allowed on kernels from 4.8 on, where ptrace can no longer bypass seccomp.
const ALLOWED_SINCE_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Allowed only when the container holds the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Allowed only on these native architectures.
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
    ),
    (&["ppc64le"], &["swapcontext", "sync_file_range2"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache", "riscv_hwprobe"]),
];

/// personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query only).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Native architecture → the architectures its filter covers.
const ARCH_MAP: &[(&str, &[&str])] = &[
    ("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
    ("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
    ("SCMP_ARCH_PPC64LE", &[]),
    ("SCMP_ARCH_RISCV64", &[]),
    ("SCMP_ARCH_LOONGARCH64", &[]),
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    fn new(names: &[&str], action: LinuxSeccompAction) -> Rule {
        Rule {
            names: strings(names),
            action: action.to_string(),
            ..Default::default()
        }
    }

    fn allow(names: &[&str]) -> Rule {
        Rule::new(names, LinuxSeccompAction::ScmpActAllow)
    }

    fn with_arg(mut self, index: usize, op: LinuxSeccompOperator, value: u64) -> Rule {
        self.args.push(Arg {
            index,
            value,
            value_two: 0,
            op: op.to_string(),
        });
        self
    }
}

/// crid's RuntimeDefault profile, before evaluation against a container.
pub fn default_profile() -> Profile {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    let mut rules = vec![Rule::allow(ALLOWED)];
    let mut since = Rule::allow(ALLOWED_SINCE_4_8);
    since.includes.min_kernel = "4.8".into();
    rules.push(since);
    // socket(2) for every family but AF_ALG and AF_VSOCK, as three ranges:
    // runc splits two conditions on one argument into separate rules (OR),
    // so "!= 38 and != 40" in one rule would allow both. (ABIs that go
    // through socketcall(2) are not filtered.)
    rules.push(Rule::allow(&["socket"]).with_arg(0, ScmpCmpLt, AF_ALG));
    rules.push(Rule::allow(&["socket"]).with_arg(0, ScmpCmpEq, AF_ALG + 1));
    rules.push(Rule::allow(&["socket"]).with_arg(0, ScmpCmpGt, AF_VSOCK));
    for &p in PERSONALITIES {
        rules.push(Rule::allow(&["personality"]).with_arg(0, ScmpCmpEq, p));
    }
    for (arches, names) in BY_ARCH {
        let mut r = Rule::allow(names);
        r.includes.arches = strings(arches);
        rules.push(r);
    }
    for (cap, names) in BY_CAPABILITY {
        let mut r = Rule::allow(names);
        r.includes.caps = vec![cap.to_string()];
        rules.push(r);
    }
    // Without CAP_SYS_ADMIN: clone without namespace flags (the flags are
    // argument 0, argument 1 on s390), clone3 fails with ENOSYS.
    let s390 = strings(&["s390", "s390x"]);
    let sys_admin = vec!["CAP_SYS_ADMIN".to_string()];
    let mut clone = Rule::allow(&["clone"]).with_arg(0, ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS);
    clone.excludes.caps = sys_admin.clone();
    clone.excludes.arches = s390.clone();
    rules.push(clone);
    let mut clone = Rule::allow(&["clone"]).with_arg(1, ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS);
    clone.excludes.caps = sys_admin.clone();
    clone.includes.arches = s390;
    rules.push(clone);
    let mut clone3 = Rule::new(&["clone3"], LinuxSeccompAction::ScmpActErrno);
    clone3.errno_ret = Some(ENOSYS);
    clone3.excludes.caps = sys_admin;
    rules.push(clone3);
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno.to_string(),
        default_errno_ret: Some(EPERM),
        arch_map: ARCH_MAP
            .iter()
            .map(|(main, subs)| ArchMapEntry {
                architecture: main.to_string(),
                sub_architectures: strings(subs),
            })
            .collect(),
        syscalls: rules,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::security;
    use crate::spec::testing::FakeHost;
    use crid_proto::cri::security_profile::ProfileType;
    use crid_proto::cri::SecurityProfile;

    fn sc(t: ProfileType, r: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    fn on(arch: &str) -> HostFacts {
        HostFacts {
            arch: arch.into(),
            kernel: Some(KernelVersion(6, 1, 0)),
            ..Default::default()
        }
    }

    fn default_caps() -> Vec<Capability> {
        security::default_capabilities().into_iter().collect()
    }

    fn with_caps(names: &[&str]) -> Vec<Capability> {
        let mut c = default_caps();
        c.extend(names.iter().map(|n| security::parse_capability(n).unwrap()));
        c
    }

    fn runtime_default(caps: &[Capability], host: &HostFacts) -> LinuxSeccomp {
        linux_seccomp(
            &sc(ProfileType::RuntimeDefault, ""),
            caps,
            host,
            &FakeHost::default(),
        )
        .unwrap()
        .unwrap()
    }

    /// Rules naming `name`.
    fn rules_for<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    /// The names of each rule, in order.
    fn rule_names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .map(|r| r.names().join(","))
            .collect()
    }

    /// `name` is allowed whatever its arguments.
    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        rules_for(s, name)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    fn invalid(r: Result<Option<LinuxSeccomp>, SpecError>) -> String {
        match r {
            Err(SpecError::InvalidArgument(m)) => m,
            other => panic!("want InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn unset_unconfined_and_privileged_get_no_filter() {
        let h = on("x86_64");
        let view = FakeHost::default();
        let none = |s: &LinuxContainerSecurityContext| {
            linux_seccomp(s, &default_caps(), &h, &view).unwrap()
        };
        assert_eq!(none(&Default::default()), None);
        assert_eq!(none(&sc(ProfileType::Unconfined, "")), None);
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            seccomp_profile_path: "unconfined".into(),
            ..Default::default()
        };
        assert_eq!(none(&old), None);
        // Privileged: nothing applies, not even a missing file or a bad type.
        for mut s in [
            sc(ProfileType::RuntimeDefault, ""),
            sc(ProfileType::Localhost, "/missing.json"),
            LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            },
        ] {
            s.privileged = true;
            assert_eq!(none(&s), None);
        }
    }

    #[test]
    fn runtime_default_on_amd64() {
        let s = runtime_default(&default_caps(), &on("x86_64"));
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(EPERM));
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        for name in ALLOWED {
            assert!(allowed(&s, name), "{name}");
        }
        assert!(ALLOWED.len() > 350);
        for name in [
            "read",
            "openat",
            "execve",
            "mkdirat",
            "chroot",
            "arch_prctl",
            "modify_ldt",
        ] {
            assert!(allowed(&s, name), "{name}");
        }
        // Kernel >= 4.8: ptrace without CAP_SYS_PTRACE.
        assert!(allowed(&s, "ptrace"));
        // Refused (default action): namespaces, mounts, keys, io_uring,
        // modules, time, other arches' calls.
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "sethostname",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "init_module",
            "settimeofday",
            "bpf",
            "reboot",
            "open_by_handle_at",
            "arm_fadvise64_64",
            "s390_runtime_instr",
            "swapon",
            "kexec_load",
        ] {
            assert!(rules_for(&s, name).is_empty(), "{name}");
        }
        // clone only without namespace flags (argument 0), clone3 → ENOSYS.
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        let a = clone[0].args().clone().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].index(), 0);
        assert_eq!(a[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a[0].value(), 0x7E02_0000);
        assert_eq!(a[0].value_two(), Some(0));
        let clone3 = rules_for(&s, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(ENOSYS));
        // personality: exactly five values; socket: all but AF_ALG and AF_VSOCK.
        let pers: Vec<u64> = rules_for(&s, "personality")
            .iter()
            .map(|r| r.args().clone().unwrap()[0].value())
            .collect();
        assert_eq!(pers, PERSONALITIES);
        let socket: Vec<(LinuxSeccompOperator, u64)> = rules_for(&s, "socket")
            .iter()
            .map(|r| {
                let a = r.args().clone().unwrap();
                assert_eq!(a.len(), 1);
                (a[0].op(), a[0].value())
            })
            .collect();
        use LinuxSeccompOperator::*;
        assert_eq!(
            socket,
            vec![(ScmpCmpLt, 38), (ScmpCmpEq, 39), (ScmpCmpGt, 40)]
        );
    }

    #[test]
    fn runtime_default_on_arm64_and_s390x() {
        let s = runtime_default(&default_caps(), &on("aarch64"));
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        for name in [
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "set_tls",
        ] {
            assert!(allowed(&s, name), "{name}");
        }
        assert!(rules_for(&s, "arch_prctl").is_empty());
        assert!(rules_for(&s, "modify_ldt").is_empty());
        assert_eq!(
            rules_for(&s, "clone")[0].args().clone().unwrap()[0].index(),
            0
        );

        let s = runtime_default(&default_caps(), &on("s390x"));
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchS390x, Arch::ScmpArchS390]
        );
        assert!(allowed(&s, "s390_runtime_instr"));
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        // s390 passes clone's flags as the second argument.
        assert_eq!(clone[0].args().clone().unwrap()[0].index(), 1);

        // An architecture crid does not map: libseccomp's native only.
        let s = runtime_default(&default_caps(), &on("sparc64"));
        assert_eq!(s.architectures(), &None);
    }

    #[test]
    fn capability_rules_follow_the_containers_capabilities() {
        let h = on("x86_64");
        for (cap, names) in BY_CAPABILITY {
            let without = runtime_default(&default_caps(), &h);
            let with = runtime_default(&with_caps(&[cap]), &h);
            for name in *names {
                assert!(allowed(&with, name), "{cap} {name}");
                // Calls the default list or another held capability allows.
                let elsewhere = ALLOWED.contains(name)
                    || ALLOWED_SINCE_4_8.contains(name)
                    || (*name == "chroot");
                assert_eq!(allowed(&without, name), elsewhere, "{cap} {name}");
            }
        }
        // CAP_SYS_ADMIN: clone and clone3 unrestricted, no ENOSYS rule.
        let admin = runtime_default(&with_caps(&["SYS_ADMIN"]), &h);
        let clone = rules_for(&admin, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().is_none());
        let clone3 = rules_for(&admin, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActAllow);
        // Dropping a default capability removes its rule: no chroot without SYS_CHROOT.
        let fewer: Vec<Capability> = default_caps()
            .into_iter()
            .filter(|c| *c != Capability::SysChroot)
            .collect();
        assert!(rules_for(&runtime_default(&fewer, &h), "chroot").is_empty());
    }

    #[test]
    fn old_kernels_need_cap_sys_ptrace_for_ptrace() {
        let mut h = on("x86_64");
        h.kernel = Some(KernelVersion(4, 4, 0));
        let s = runtime_default(&default_caps(), &h);
        assert!(rules_for(&s, "ptrace").is_empty());
        let s = runtime_default(&with_caps(&["SYS_PTRACE"]), &h);
        assert!(allowed(&s, "ptrace"));
    }

    #[test]
    fn deprecated_strings_select_the_default() {
        let h = on("x86_64");
        let want = runtime_default(&default_caps(), &h);
        for path in ["runtime/default", "docker/default"] {
            #[allow(deprecated)]
            let old = LinuxContainerSecurityContext {
                seccomp_profile_path: path.into(),
                ..Default::default()
            };
            let got = linux_seccomp(&old, &default_caps(), &h, &FakeHost::default())
                .unwrap()
                .unwrap();
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn a_kernel_without_seccomp_refuses_profiles() {
        let mut h = on("x86_64");
        h.seccomp_enabled = false;
        let view = FakeHost::default();
        assert!(matches!(
            linux_seccomp(&sc(ProfileType::RuntimeDefault, ""), &[], &h, &view),
            Err(SpecError::FailedPrecondition(_))
        ));
        assert_eq!(
            linux_seccomp(&sc(ProfileType::Unconfined, ""), &[], &h, &view).unwrap(),
            None
        );
    }

    /// A docker-format profile using every feature.
    const DOCKER_PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": null}
        ],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": null},
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "comment": "x"},
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_LOG", "includes": {"arches": ["amd64"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRAP", "includes": {"minKernel": "7.0"}},
            {"names": ["kcmp"], "action": "SCMP_ACT_TRAP", "excludes": {"minKernel": "5.0"}},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_NE"}],
             "includes": {"caps": ["CAP_CHOWN", "CAP_KILL"]}}
        ]
    }"#;

    fn localhost(
        text: &str,
        caps: &[Capability],
        host: &HostFacts,
    ) -> Result<Option<LinuxSeccomp>, SpecError> {
        let view = FakeHost::default().with_profile("/etc/seccomp/p.json", text);
        linux_seccomp(
            &sc(ProfileType::Localhost, "/etc/seccomp/p.json"),
            caps,
            host,
            &view,
        )
    }

    #[test]
    fn localhost_docker_format_is_evaluated_for_the_container() {
        let s = localhost(DOCKER_PROFILE, &default_caps(), &on("x86_64"))
            .unwrap()
            .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(s.default_errno_ret(), None);
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]
        );
        assert_eq!(
            s.flags().clone().unwrap(),
            vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]
        );
        // sethostname: kept (no CAP_SYS_ADMIN); arch_prctl: amd64; ptrace:
        // kernel 6.1 < 7.0, dropped; kcmp: 6.1 >= 5.0, excluded;
        // personality: CHOWN and KILL are both held.
        assert_eq!(
            rule_names(&s),
            [
                "mkdir",
                "mkdirat",
                "sethostname",
                "arch_prctl",
                "personality"
            ]
        );
        let mkdir = &rules_for(&s, "mkdir")[0];
        assert_eq!(mkdir.errno_ret(), Some(13));
        assert_eq!(mkdir.args(), &None);
        let p = rules_for(&s, "personality")[0].args().clone().unwrap();
        assert_eq!(p[0].op(), LinuxSeccompOperator::ScmpCmpNe);
        assert_eq!(p[0].value(), 8);

        // Another container, another node: CAP_SYS_ADMIN held, KILL dropped, arm64.
        let caps: Vec<Capability> = with_caps(&["SYS_ADMIN"])
            .into_iter()
            .filter(|c| *c != Capability::Kill)
            .collect();
        let s = localhost(DOCKER_PROFILE, &caps, &on("aarch64"))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64]
        );
        assert_eq!(rule_names(&s), ["mkdir", "mkdirat"]);
    }

    #[test]
    fn localhost_oci_format_passes_through() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["ioctl"], "action": "SCMP_ACT_NOTIFY"}]
        }"#;
        let s = localhost(text, &[], &on("x86_64")).unwrap().unwrap();
        assert_eq!(s.default_errno_ret(), Some(38));
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchAarch64]
        );
        assert_eq!(
            s.listener_path().as_deref(),
            Some(Path::new("/run/agent.sock"))
        );
        assert_eq!(s.listener_metadata().as_deref(), Some("meta"));
        assert_eq!(s.syscalls().as_ref().map(Vec::len), Some(2));
        // As runc reads it.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        assert_eq!(json["syscalls"][1]["action"], "SCMP_ACT_NOTIFY");
    }

    #[test]
    fn bad_localhost_profiles_name_the_path() {
        let h = on("x86_64");
        let caps = default_caps();
        let cases = [
            ("{", "not a seccomp profile"),
            ("42", "not a seccomp profile"),
            (r#"{"syscalls": []}"#, "no defaultAction"),
            (
                r#"{"defaultAction": "SCMP_ACT_DENY"}"#,
                "unknown action \"SCMP_ACT_DENY\"",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#,
                "unknown architecture",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
                    "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
                "both architectures and archMap",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["FAST"]}"#,
                "unknown flag",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "BLOCK"}]}"#,
                "syscalls[0]: unknown action \"BLOCK\"",
            ),
            // Checked even when the rule does not apply here.
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "NOPE",
                    "includes": {"arches": ["s390x"]}}]}"#,
                "syscalls[0]: unknown action",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_LOG"}]}"#,
                "both name and names",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_LOG"}]}"#,
                "no syscall name",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_LOG",
                    "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                "argument index 6",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_LOG",
                    "args": [{"index": 0, "value": 1, "op": "EQUALS"}]}]}"#,
                "unknown operator",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_LOG",
                    "includes": {"minKernel": "new"}}]}"#,
                "bad minKernel",
            ),
        ];
        for (text, want) in cases {
            let m = invalid(localhost(text, &caps, &h));
            assert!(m.contains("/etc/seccomp/p.json"), "{m}");
            assert!(m.contains(want), "{text}: {m}");
        }
        // minKernel needs the node's kernel version.
        let mut unknown = h.clone();
        unknown.kernel = None;
        let m = invalid(localhost(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"],
                "action": "SCMP_ACT_LOG", "includes": {"minKernel": "4.8"}}]}"#,
            &caps,
            &unknown,
        ));
        assert!(m.contains("kernel version is unknown"), "{m}");
    }

    #[test]
    fn localhost_paths_must_be_absolute_files_that_exist() {
        let h = on("x86_64");
        let view = FakeHost::default();
        let refused = |r: &str| {
            invalid(linux_seccomp(
                &sc(ProfileType::Localhost, r),
                &[],
                &h,
                &view,
            ))
        };
        for (path, want) in [
            (
                "/var/lib/kubelet/seccomp/nope.json",
                "seccomp profile /var/lib/kubelet/seccomp/nope.json: cannot read",
            ),
            ("profiles/a.json", "\"profiles/a.json\" is not absolute"),
            ("/a/../etc/shadow", "contains \"..\""),
        ] {
            let m = refused(path);
            assert!(m.contains(want), "{path}: {m}");
        }
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            seccomp_profile_path: "localhost//missing.json".into(),
            ..Default::default()
        };
        let m = invalid(linux_seccomp(&old, &[], &h, &view));
        assert!(m.contains("/missing.json"), "{m}");
    }

    #[test]
    fn the_default_profile_reads_back_from_json_like_a_localhost_one() {
        // The built-in table is valid in the docker format it is written in:
        // every action, operator and architecture name parses.
        let h = on("x86_64");
        let s = runtime_default(&default_caps(), &h);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let back: LinuxSeccomp = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
