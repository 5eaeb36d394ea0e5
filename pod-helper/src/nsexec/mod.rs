//! crid-exec's logic: what runc 1.1's setns process (`runc exec`:
//! nsexec.c, setns_init_linux.go, finalizeNamespace, setupUser) does to
//! start a process in a running container, as pure functions over the
//! OCI process and config; the OS calls are in `os.rs`, seccomp in
//! `seccomp.rs`.

pub mod os;
pub mod seccomp;

use serde::Deserialize;
use std::collections::HashMap;

/// The part of an OCI process spec crid-exec uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// A terminal was asked for (not done natively).
    #[serde(default)]
    pub terminal: bool,
    /// Credentials.
    #[serde(default)]
    pub user: User,
    /// argv.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment, `K=V`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: String,
    /// Capability sets.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// rlimits.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// PR_SET_NO_NEW_PRIVS.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// AppArmor profile for the exec.
    #[serde(default)]
    pub apparmor_profile: String,
    /// oom_score_adj.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// SELinux label (not done natively).
    #[serde(default)]
    pub selinux_label: String,
}

/// OCI process user.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// uid.
    #[serde(default)]
    pub uid: u32,
    /// gid.
    #[serde(default)]
    pub gid: u32,
    /// Supplementary gids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// OCI capability sets (names like `CAP_CHOWN`).
#[derive(Debug, Default, Deserialize)]
pub struct Capabilities {
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Inheritable set.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// Permitted set.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// Ambient set.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// One OCI rlimit.
#[derive(Debug, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Hard limit.
    pub hard: u64,
    /// Soft limit.
    pub soft: u64,
}

/// The part of the bundle's config.json crid-exec uses.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// `linux`.
    #[serde(default)]
    pub linux: Linux,
}

/// OCI `linux`.
#[derive(Debug, Default, Deserialize)]
pub struct Linux {
    /// The container's seccomp profile (applies to every exec too).
    #[serde(default)]
    pub seccomp: Option<seccomp::Profile>,
}

/// Namespaces joined, in runc's order (`configs.NamespaceTypes()`: user
/// first, so the others are joined with its privileges; then time, which
/// runc 1.1 does not know but a container may have).
pub const NAMESPACES: [&str; 8] = ["user", "ipc", "uts", "net", "pid", "mnt", "cgroup", "time"];

/// Why the native path does not apply (crid falls back to `runc exec`).
pub fn unsupported(p: &Process, c: &Config) -> Option<String> {
    if p.terminal {
        return Some("a terminal is asked for".into());
    }
    if !p.selinux_label.is_empty() {
        return Some("an SELinux label is set".into());
    }
    if let Some(s) = &c.linux.seccomp {
        if let Some(why) = seccomp::unsupported(s) {
            return Some(why);
        }
    }
    None
}

/// The environment as runc builds it: later duplicates replace the value
/// in the first one's place (Go's `os.Setenv` after `os.Clearenv`); an
/// entry without `=` or with an empty name is an error.
pub fn environment(env: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for pair in env {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("invalid environment variable: {pair:?}"));
        };
        if k.is_empty() {
            return Err(format!(
                "environment variable name can't be empty: {pair:?}"
            ));
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(format!(
                "environment variable can't contain null(\\x00): {pair:?}"
            ));
        }
        match at.get(k) {
            Some(&i) => out[i].1 = v.to_string(),
            None => {
                at.insert(k.to_string(), out.len());
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    Ok(out)
}

/// HOME as runc's setupUser gives it when the environment has none (or an
/// empty one): the uid's first entry in the container's /etc/passwd, else
/// "/".
pub fn home_of(passwd: Option<&str>, uid: u32) -> String {
    passwd
        .into_iter()
        .flat_map(str::lines)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].trim().parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
        })
        .next()
        .unwrap_or_else(|| "/".into())
}

/// Supplementary groups as runc sets them for a numeric `uid:gid` user:
/// the additional gids, each once (the kernel sorts them).
pub fn groups(additional: &[u32]) -> Vec<u32> {
    let mut g: Vec<u32> = Vec::new();
    for a in additional {
        if !g.contains(a) {
            g.push(*a);
        }
    }
    g
}

/// How a file looked up for exec appears (a fake in tests).
pub trait Files {
    /// `Ok(true)`: a regular file with an x bit; `Ok(false)`: a directory
    /// or no x bit; `Err(errno)`: stat failed.
    fn executable(&self, path: &str) -> Result<bool, i32>;
}

/// An errno as Go words it (glibc's text, first letter lower case).
pub fn errno_text(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    let s = s.split(" (os error").next().unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Go 1.19's `exec.LookPath` as runc's setns init calls it, with its
/// error texts: a name with a `/` is checked as is, else each `PATH`
/// element is tried (empty meaning "."); a relative result is refused.
pub fn look_path(file: &str, path_var: Option<&str>, fs: &dyn Files) -> Result<String, String> {
    let check = |p: &str| match fs.executable(p) {
        Ok(true) => Ok(()),
        Ok(false) => Err(errno_text(libc::EACCES)),
        Err(e) => Err(format!("stat {p}: {}", errno_text(e))),
    };
    if file.contains('/') {
        return check(file)
            .map(|()| file.to_string())
            .map_err(|e| format!("exec: {file:?}: {e}"));
    }
    for dir in path_var.unwrap_or_default().split(':') {
        if path_var.unwrap_or_default().is_empty() {
            break;
        }
        let dir = if dir.is_empty() { "." } else { dir };
        let p = join(dir, file);
        if check(&p).is_ok() {
            if !p.starts_with('/') {
                return Err(format!(
                    "exec: {file:?}: cannot run executable found relative to current directory"
                ));
            }
            return Ok(p);
        }
    }
    Err(format!(
        "exec: {file:?}: executable file not found in $PATH"
    ))
}

/// `filepath.Join(dir, file)` for a plain file name: no doubled slash, "."
/// dropped.
fn join(dir: &str, file: &str) -> String {
    let d = dir.trim_end_matches('/');
    match d {
        "." => file.to_string(),
        "" => format!("/{file}"),
        _ => format!("{d}/{file}"),
    }
}

/// The rlimit resource of an OCI name.
pub fn rlimit_resource(name: &str) -> Option<i32> {
    let r = match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    };
    Some(r as i32)
}

/// The capability sets to apply: known and supported names only (runc
/// skips the others with a warning).
pub fn cap_set(names: &[String], supported: &caps::CapsHashSet) -> caps::CapsHashSet {
    names
        .iter()
        .filter_map(|n| n.parse::<caps::Capability>().ok())
        .filter(|c| supported.contains(c))
        .collect()
}

/// The cgroup.procs files to write to join the cgroups of a process
/// whose `/proc/<pid>/cgroup` is `cgroup`, given this mount namespace's
/// `mountinfo`: every v1 hierarchy (named ones too) and the cgroup2 one,
/// each at its mount point (hybrid: `/sys/fs/cgroup/unified`).
pub fn cgroup_procs(cgroup: &str, mountinfo: &str) -> Vec<String> {
    // (controllers or "" for cgroup2, mount point, mount root)
    let mut mounts: Vec<(Vec<String>, String, String)> = Vec::new();
    for l in mountinfo.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, point) = (pre[3].to_string(), pre[4].to_string());
        match post[0] {
            "cgroup2" => mounts.push((Vec::new(), point, root)),
            "cgroup" => {
                let opts: Vec<String> = post[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime")
                            && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "xattr"
                            && *o != "noprefix"
                            && *o != "cpuset_v2_mode"
                    })
                    .map(str::to_string)
                    .collect();
                mounts.push((opts, point, root));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for l in cgroup.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = match (f.next(), f.next(), f.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let want: Vec<String> = if ctrls.is_empty() {
            Vec::new()
        } else {
            let mut w: Vec<String> = ctrls.split(',').map(str::to_string).collect();
            w.sort();
            w
        };
        let found = mounts.iter().find(|(opts, _, _)| {
            let mut o = opts.clone();
            o.sort();
            o == want
        });
        if let Some((_, point, root)) = found {
            // The mount shows the hierarchy from `root` down.
            let rel = if root == "/" {
                path.to_string()
            } else {
                match path.strip_prefix(root.as_str()) {
                    Some(r) => r.to_string(),
                    None => continue,
                }
            };
            out.push(
                format!(
                    "{}/{}/cgroup.procs",
                    point.trim_end_matches('/'),
                    rel.trim_matches('/')
                )
                .replace("//", "/"),
            );
        }
    }
    out
}

/// runc's wording of a failed start (`runc exec`'s error, as its log has it).
pub fn start_error(inner: &str) -> String {
    format!("exec failed: unable to start container process: {inner}")
}

#[cfg(test)]
mod tests;
