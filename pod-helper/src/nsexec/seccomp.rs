//! The container's OCI seccomp profile compiled with libseccomp, the way
//! runc 1.1 does it (libcontainer/seccomp/seccomp_linux.go and specconv):
//! actions with `errnoRet` (EPERM when absent), per-name rules, argument
//! conditions (one rule per condition when an argument index repeats),
//! architectures, flags, the no_new_privs bit left to the caller, binary
//! tree optimisation over 32 rules; unknown syscall names are skipped.
//!
//! Not reproduced: runc's patchbpf stub, which makes syscalls newer than
//! any the profile names fail with ENOSYS instead of the default action
//! (here they get the default action); seccomp notify (`SCMP_ACT_NOTIFY`,
//! `listenerPath`) is not supported, and crid falls back to `runc exec`.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

/// OCI `linux.seccomp`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Default action.
    pub default_action: String,
    /// errno of a default `SCMP_ACT_ERRNO`/`TRACE`/`TRAP`.
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `SECCOMP_FILTER_FLAG_*`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Notify agent socket.
    #[serde(default)]
    pub listener_path: String,
    /// Rules.
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// One OCI syscall rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Syscall names.
    pub names: Vec<String>,
    /// Action.
    pub action: String,
    /// errno for ERRNO/TRACE/TRAP.
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Conditions.
    #[serde(default)]
    pub args: Vec<Arg>,
}

/// One OCI argument condition.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Argument index.
    pub index: u32,
    /// Value (the mask for MASKED_EQ).
    #[serde(default)]
    pub value: u64,
    /// Second value (the datum for MASKED_EQ).
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: String,
}

/// What a rule or the default does, as libseccomp takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Kill the thread (runc maps KILL and KILL_THREAD here).
    KillThread,
    /// Kill the process.
    KillProcess,
    /// Fail with errno.
    Errno(i32),
    /// SIGSYS with this value.
    Trap(i32),
    /// Tracer notified with this value.
    Trace(u16),
    /// Allowed, logged.
    Log,
    /// Allowed.
    Allow,
}

impl Action {
    fn scmp(self) -> ScmpAction {
        match self {
            Action::KillThread => ScmpAction::KillThread,
            Action::KillProcess => ScmpAction::KillProcess,
            Action::Errno(e) => ScmpAction::Errno(e),
            // libseccomp's SCMP_ACT_TRAP carries no value; runc sets one
            // with SetReturnCode, which libseccomp ignores for TRAP as well.
            Action::Trap(_) => ScmpAction::Trap,
            Action::Trace(v) => ScmpAction::Trace(v),
            Action::Log => ScmpAction::Log,
            Action::Allow => ScmpAction::Allow,
        }
    }
}

/// runc's `getAction`: EPERM when no errno is given; errno truncated to
/// 16 bits as runc's int16 cast does.
pub fn action(name: &str, errno: Option<u32>) -> Result<Action, String> {
    let e = errno.map(|e| e as u16 as i32).unwrap_or(libc::EPERM);
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_ERRNO" => Action::Errno(e),
        "SCMP_ACT_TRAP" => Action::Trap(e),
        "SCMP_ACT_TRACE" => Action::Trace(e as u16),
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_ALLOW" => Action::Allow,
        other => return Err(format!("invalid action {other:?}, cannot use in rule")),
    })
}

/// One condition: (index, op, value, datum for MASKED_EQ).
pub fn condition(a: &Arg) -> Result<ScmpArgCompare, String> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(a.value),
        other => return Err(format!("invalid seccomp operator {other:?}")),
    };
    if a.index > 5 {
        return Err(format!("invalid seccomp argument index {}", a.index));
    }
    let datum = if a.op == "SCMP_CMP_MASKED_EQ" {
        a.value_two
    } else {
        a.value
    };
    Ok(ScmpArgCompare::new(a.index, op, datum))
}

/// The conditions of a rule grouped as runc adds them: all in one rule,
/// or one rule each when an argument index appears more than once.
pub fn condition_groups(args: &[Arg]) -> Vec<Vec<usize>> {
    let mut counts = [0usize; 6];
    for a in args {
        if let Some(c) = counts.get_mut(a.index as usize) {
            *c += 1;
        }
    }
    if counts.iter().any(|c| *c > 1) {
        (0..args.len()).map(|i| vec![i]).collect()
    } else {
        vec![(0..args.len()).collect()]
    }
}

/// Why a profile cannot be applied natively.
pub fn unsupported(p: &Profile) -> Option<String> {
    if !p.listener_path.is_empty()
        || p.default_action == "SCMP_ACT_NOTIFY"
        || p.syscalls.iter().any(|r| r.action == "SCMP_ACT_NOTIFY")
    {
        return Some("seccomp notify is used".into());
    }
    None
}

/// Builds the filter (not loaded).
pub fn compile(p: &Profile) -> Result<ScmpFilterContext, String> {
    let err = |what: &str, e: libseccomp::error::SeccompError| format!("{what}: {e}");
    let default = action(&p.default_action, p.default_errno_ret)
        .map_err(|_| "error initializing seccomp - invalid default action".to_string())?;
    let mut f = ScmpFilterContext::new_filter(default.scmp())
        .map_err(|e| err("error creating filter", e))?;
    for a in &p.architectures {
        let arch: ScmpArch = a
            .parse()
            .map_err(|e| err("error validating Seccomp architecture", e))?;
        if !f.is_arch_present(arch).unwrap_or(false) {
            f.add_arch(arch)
                .map_err(|e| err("error adding architecture to seccomp filter", e))?;
        }
    }
    for flag in &p.flags {
        match flag.as_str() {
            // runc: TSYNC can be ignored (one thread here).
            "SECCOMP_FILTER_FLAG_TSYNC" => {}
            "SECCOMP_FILTER_FLAG_LOG" => f.set_ctl_log(true).map_err(|e| err("log flag", e))?,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => {
                f.set_ctl_ssb(true).map_err(|e| err("spec allow flag", e))?
            }
            other => return Err(format!("seccomp flags {other:?} not yet supported by runc")),
        }
    }
    let rules: usize = p.syscalls.iter().map(|r| r.names.len()).sum();
    if rules > 32 {
        // As runc: not fatal when libseccomp lacks it.
        let _ = f.set_ctl_optimize(2);
    }
    f.set_ctl_nnp(false)
        .map_err(|e| err("error setting no new privileges", e))?;
    for r in &p.syscalls {
        let act = action(&r.action, r.errno_ret)
            .map_err(|e| format!("action in seccomp profile is invalid: {e}"))?;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = r.args.iter().map(condition).collect::<Result<_, _>>()?;
        for name in &r.names {
            // Unknown to this libseccomp/kernel: skipped, as runc does.
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let add_err = |e| {
                err(
                    &format!("error adding seccomp filter rule for syscall {name}"),
                    e,
                )
            };
            if conds.is_empty() {
                f.add_rule(act.scmp(), nr).map_err(add_err)?;
                continue;
            }
            for group in condition_groups(&r.args) {
                let c: Vec<ScmpArgCompare> = group.iter().map(|i| conds[*i]).collect();
                f.add_rule_conditional(act.scmp(), nr, &c)
                    .map_err(add_err)?;
            }
        }
    }
    Ok(f)
}
