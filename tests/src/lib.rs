//! The end-to-end harness: a private containerd per test (own root, state and
//! socket), crid started against it on a temporary socket, and CRI clients.
//! Everything is torn down on drop: processes stopped, mounts under the
//! test's directory detached, the directory removed.

pub mod bench;
pub mod containerd;
pub mod containerd_cri;
pub mod crid;
pub mod critest;
pub mod debug_cli;
pub mod fake_registry;
pub mod images;
pub mod kubelet;
pub mod net;
pub mod pods;
pub mod registry;
pub mod soak;
pub mod stream_client;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use containerd::PrivateContainerd;
pub use containerd_cri::{PeerOptions, PrivateCriContainerd};
pub use crid::{CriClients, CridProcess};
pub use images::{ImageBuilder, PushTarget};
pub use registry::{Registry, RegistryOptions};

/// `ctr -n crid <args>` against the containerd at `socket`; panics (with
/// ctr's stderr) when ctr fails. Returns stdout.
pub fn ctr(socket: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "crid"])
        .args(args)
        .output()
        .expect("running ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boxed error for test plumbing.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `seccomp-probe` (tests/tests/seccomp_probe.c) compiled static with the
/// system C compiler, to be added to a test image.
pub fn seccomp_probe_binary() -> Vec<u8> {
    let dir = test_dir();
    let src = dir.path().join("probe.c");
    let out = dir.path().join("probe");
    std::fs::write(&src, include_str!("../tests/seccomp_probe.c")).unwrap();
    let res = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running cc (Debian: gcc, libc6-dev)");
    assert!(
        res.status.success(),
        "cc -static failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::read(&out).unwrap()
}

/// A fresh directory for one test, named so leak checks can find leftovers.
pub fn test_dir() -> tempfile::TempDir {
    let base = Path::new("/var/tmp");
    tempfile::Builder::new()
        .prefix("crid-test-")
        .tempdir_in(base)
        .expect("creating a test directory under /var/tmp")
}

/// Path of a workspace binary (`crid`, `crid-pod-helper`), next to the test
/// executable's profile dir unless `CRID_BIN_DIR` says otherwise.
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CRID_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not built; run `cargo build --workspace` (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_every(timeout, Duration::from_millis(50), f).await
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub async fn poll_every<T, F, Fut>(timeout: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches every mount at or below `dir`.
pub fn unmount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every pid in the cgroup `rel` (and below) of any hierarchy.
pub fn pids_in_cgroup(rel: &str) -> Vec<i32> {
    let mut dirs = vec![];
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = root.path().join(rel);
        if top.is_dir() {
            collect_dirs(&top, &mut dirs);
        }
    }
    let mut pids: Vec<i32> = dirs
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the cgroup `rel` (e.g. `crid-env-test`) and its empty children from
/// every cgroup hierarchy under /sys/fs/cgroup (v1 controllers and v2), deepest
/// first; cgroups still holding processes stay and are reported.
pub fn remove_cgroup_everywhere(rel: &str) -> Vec<PathBuf> {
    let mut left = vec![];
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    let mut candidates: Vec<PathBuf> = roots
        .filter_map(Result::ok)
        .map(|e| e.path().join(rel))
        .collect();
    // Pure v2: the hierarchy is /sys/fs/cgroup itself.
    candidates.push(Path::new("/sys/fs/cgroup").join(rel));
    for top in candidates.into_iter().filter(|p| p.is_dir()) {
        let mut dirs = vec![];
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            if std::fs::remove_dir(&d).is_err() {
                left.push(d);
            }
        }
    }
    left
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Cleans up after a test that failed with pods still running: SIGKILLs the
/// pod helpers started for `dir` (their command line names it), detaches the
/// mounts under `dir`, and removes the default cgroups (`/crid/<id>`) of the
/// sandboxes recorded in crid's state dir `state_dir`. Stop crid first: its
/// supervisor would restart the helpers.
pub fn kill_leftover_pods(dir: &Path, state_dir: &Path) {
    for (pid, _) in pod_processes(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    unmount_all_under(dir);
    let ids: Vec<String> = std::fs::read_dir(state_dir.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_string)
        })
        .filter(|id| !id.starts_with('.'))
        .collect();
    for id in ids {
        // A helper-shim pod's socket outside the test dir (deep test dirs
        // do not fit a unix socket address).
        let _ = std::fs::remove_file(Path::new("/run/crid-shim").join(format!("{id}.sock")));
        // Whatever still runs in the pod's cgroups (containers) dies too.
        for pid in pids_in_cgroup(&format!("crid/{id}")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Killed processes leave their cgroups a moment later (their
        // orphans only once pid 1 reaps them, which can be slow).
        for _ in 0..500 {
            if remove_cgroup_everywhere(&format!("crid/{id}")).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The shared parent goes only if no other test's pod is in it (rmdir of a
    // cgroup with children fails).
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(root.path().join("crid"));
    }
}

/// The pod processes of the test in `dir`: pod helpers (and their pod
/// roots, which carry the helper's command line) and the containerd shims
/// of its containerd, as (pid, command line). Zombies have none.
pub fn pod_processes(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if (cmd.contains("crid-pod-helper") || cmd.contains("containerd-shim"))
            && cmd.contains(&needle)
        {
            out.push((pid, cmd));
        }
    }
    out
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat, read after the
/// command name, which may hold spaces and parentheses); `None` once gone.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether the handler `name` (empty: the default) of `config` runs pods
/// with the pod helper as their shim (`io.containerd.crid.v1`).
pub fn helper_is_shim(config: &crid_common::config::Config, name: &str) -> bool {
    config
        .runtime_handler(name)
        .is_some_and(|(_, h)| h.runtime_type == crid_common::config::CRID_SHIM_RUNTIME_TYPE)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every file called `name` below `dir` (for dumping logs of a failed test).
pub fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(_) if e.file_name() == name => out.push(p),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(super::unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(super::unescape_mountinfo("/plain"), "/plain");
    }
}
