//! OOM kills in a container's cgroup, reported as `/tasks/oom` (crid turns
//! them into the `OOMKilled` reason). cgroup v1: an eventfd registered on
//! `memory.oom_control` through `cgroup.event_control`; the eventfd also
//! fires when the cgroup is removed, which ends the watch. (On a pure
//! cgroup v2 host, `memory.events` would be watched instead; this machine's
//! memory controller is v1, so that path is not built yet.)

use std::io::Read;
use std::path::PathBuf;

/// Stack of a watch thread.
const WATCH_STACK: usize = 64 * 1024;

/// The cgroup v1 memory hierarchy's mount point, from mountinfo text.
pub fn memory_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let _source = r.next()?;
        let opts = r.next()?;
        (fstype == "cgroup" && opts.split(',').any(|o| o == "memory"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The `oom_kill` count in a `memory.oom_control` text (0 when absent).
pub fn oom_kills(oom_control: &str) -> u64 {
    oom_control
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The v1 memory cgroup of a process from its `/proc/<pid>/cgroup` text.
pub fn memory_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        (controllers.split(',').any(|c| c == "memory") && !path.contains(".."))
            .then(|| path.to_string())
    })
}

/// The memory cgroup dir of process `pid` (cgroup v1).
pub fn memory_dir(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = memory_cgroup(&text)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(memory_mount(&mountinfo)?.join(path.trim_start_matches('/')))
}

/// Watches the cgroup of the container whose init is `pid` for OOM kills,
/// calling `on_oom` for each, until the cgroup goes away. Best effort: a
/// cgroup that cannot be watched is logged and left.
pub fn watch(pid: u32, on_oom: impl Fn() + Send + 'static) {
    let r = (|| -> Result<(), String> {
        let Some(dir) = memory_dir(pid) else {
            return Ok(());
        };
        let control = std::fs::File::open(dir.join("memory.oom_control"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut efd = crate::sys::eventfd().map_err(|e| e.to_string())?;
        use std::os::fd::AsRawFd;
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )
        .map_err(|e| format!("registering for OOM events: {e}"))?;
        let oom_control = dir.join("memory.oom_control");
        std::thread::Builder::new()
            .name("shim-oom".into())
            .stack_size(WATCH_STACK)
            .spawn(move || {
                let _control = control;
                let mut seen = 0;
                let mut buf = [0u8; 8];
                while efd.read_exact(&mut buf).is_ok() {
                    // Removal of the cgroup fires too: then the file is gone.
                    let Ok(text) = std::fs::read_to_string(&oom_control) else {
                        return;
                    };
                    let kills = oom_kills(&text);
                    if kills > seen {
                        seen = kills;
                        on_oom();
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(())
    })();
    if let Err(e) = r {
        crate::log(&format!("no OOM watch for process {pid}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_memory_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";
        assert_eq!(
            memory_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            memory_mount("30 25 0:26 / /x rw - cgroup2 cgroup2 rw\n"),
            None
        );
    }

    #[test]
    fn counts_oom_kills() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn memory_cgroup_of_a_process() {
        let c = "12:pids:/crid/p/c\n5:memory:/crid/p/c\n0::/crid/p/c\n";
        assert_eq!(memory_cgroup(c).as_deref(), Some("/crid/p/c"));
        assert_eq!(memory_cgroup("0::/x\n"), None);
        assert_eq!(memory_cgroup("5:memory:/a/../b\n"), None);
    }
}
