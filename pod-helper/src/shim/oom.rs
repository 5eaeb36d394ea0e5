//! OOM kills in a container's cgroup, reported as `/tasks/oom` (crid turns
//! them into the `OOMKilled` reason). cgroup v1: an eventfd registered on
//! `memory.oom_control` through `cgroup.event_control`; the eventfd also
//! fires when the cgroup is removed, which ends the watch. cgroup v2 (the
//! memory controller in the unified hierarchy): inotify on the cgroup's
//! `memory.events`, which the kernel marks modified on every change; the
//! watch ends with `IN_IGNORED` when the cgroup is removed. Both files
//! count kills on an `oom_kill N` line.

use std::io::Read;
use std::path::PathBuf;

/// Stack of a watch thread.
const WATCH_STACK: usize = 64 * 1024;

/// The `oom_kill` count in a `memory.oom_control` (v1) or `memory.events`
/// (v2) text (0 when absent).
pub fn oom_kills(oom_control: &str) -> u64 {
    crid_common::cgroup_io::parse_kv(oom_control)
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

/// The file counting OOM kills in the memory cgroup of process `pid`:
/// `memory.oom_control` when the memory controller is on a v1 hierarchy,
/// else the cgroup2 group's `memory.events` when the controller is enabled
/// there.
pub fn oom_counter(pid: u32) -> Option<PathBuf> {
    let dirs = super::cgroup::dirs_of(pid).ok()?;
    if let Some(dir) = dirs.get("memory") {
        return Some(dir.join(V1_COUNTER));
    }
    let events = dirs.get("")?.join("memory.events");
    events.exists().then_some(events)
}

/// The v1 counter's name; the eventfd watch is v1 only.
const V1_COUNTER: &str = "memory.oom_control";

/// Watches the cgroup of the container whose init is `pid` for OOM kills,
/// calling `on_oom` for each, until the cgroup goes away. Best effort: a
/// cgroup that cannot be watched is logged and left.
pub fn watch(pid: u32, on_oom: impl Fn() + Send + 'static) {
    let Some(counter) = oom_counter(pid) else {
        return;
    };
    let r = if counter.ends_with(V1_COUNTER) {
        watch_v1(counter, on_oom)
    } else {
        watch_events(counter, on_oom).map(drop)
    };
    if let Err(e) = r {
        crate::log(&format!("no OOM watch for process {pid}: {e}"));
    }
}

fn watch_v1(oom_control: PathBuf, on_oom: impl Fn() + Send + 'static) -> Result<(), String> {
    let dir = oom_control.parent().map(PathBuf::from).unwrap_or_default();
    let control =
        std::fs::File::open(&oom_control).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut efd = crate::sys::eventfd().map_err(|e| e.to_string())?;
    use std::os::fd::AsRawFd;
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )
    .map_err(|e| format!("registering for OOM events: {e}"))?;
    std::thread::Builder::new()
        .name("shim-oom".into())
        .stack_size(WATCH_STACK)
        .spawn(move || {
            let _control = control;
            let mut seen = 0;
            let mut buf = [0u8; 8];
            while efd.read_exact(&mut buf).is_ok() {
                // Removal of the cgroup fires too: then the file is gone.
                if !report_new_kills(&oom_control, &mut seen, &on_oom) {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Watches a `memory.events` file (cgroup v2) with inotify; the thread ends
/// when the file goes away (its cgroup removed).
fn watch_events(
    events: PathBuf,
    on_oom: impl Fn() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| e.to_string())?;
    inotify
        .add_watch(&events, AddWatchFlags::IN_MODIFY)
        .map_err(|e| format!("{}: {e}", events.display()))?;
    // Kills before the watch (a container OOM-killed as it starts) are
    // reported by the exit path, which reads the same counter.
    let mut seen = std::fs::read_to_string(&events)
        .map(|t| oom_kills(&t))
        .map_err(|e| format!("{}: {e}", events.display()))?;
    std::thread::Builder::new()
        .name("shim-oom".into())
        .stack_size(WATCH_STACK)
        .spawn(move || loop {
            let Ok(batch) = inotify.read_events() else {
                return;
            };
            if batch
                .iter()
                .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
            {
                return;
            }
            if !report_new_kills(&events, &mut seen, &on_oom) {
                return;
            }
        })
        .map_err(|e| e.to_string())
}

/// Reads the kill counter at `path` and calls `on_oom` when it has grown
/// past `seen`; false once the file is gone (the cgroup removed).
fn report_new_kills(path: &std::path::Path, seen: &mut u64, on_oom: &impl Fn()) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let kills = oom_kills(&text);
    if kills > *seen {
        *seen = kills;
        on_oom();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_oom_kills() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    /// The v2 watch on a plain file standing in for `memory.events`: a
    /// rewrite with a higher `oom_kill` is one OOM, one without is none,
    /// and removing the file ends the thread.
    #[test]
    fn memory_events_watch_reports_new_kills_and_ends_with_the_file() {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = std::env::temp_dir().join(format!("crid-oom-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let h = watch_events(events.clone(), move || tx.send(()).unwrap()).unwrap();
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n").unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("no OOM reported");
        std::fs::remove_file(&events).unwrap();
        for _ in 0..100 {
            if h.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(h.is_finished(), "the watch outlived its file");
        std::fs::remove_dir(&dir).unwrap();
    }
}
