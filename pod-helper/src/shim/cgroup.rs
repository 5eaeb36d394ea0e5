//! Where a process's cgroups are: one directory per controller, read from
//! its `/proc/<pid>/cgroup` and the helper's mountinfo, so the OOM watch and
//! `Stats` work the same under the cgroupfs and systemd drivers and on v1,
//! v2 and hybrid hosts.

use std::collections::HashMap;
use std::path::PathBuf;

/// The controller directories of process `pid` (`""`: the unified one).
pub fn dirs_of(pid: u32) -> Result<HashMap<String, PathBuf>, String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    Ok(controller_dirs(&cgroup, &mountinfo))
}

/// Each controller's directory for a process (`""` for the unified
/// hierarchy), from its `/proc/<pid>/cgroup` and our mountinfo.
pub fn controller_dirs(proc_cgroup: &str, mountinfo: &str) -> HashMap<String, PathBuf> {
    // Mount points by controller ("" = cgroup2).
    let mut mounts = HashMap::new();
    for l in mountinfo.lines() {
        let Some((left, right)) = l.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), Some(_), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        match fstype {
            "cgroup2" => {
                mounts.entry(String::new()).or_insert(PathBuf::from(point));
            }
            "cgroup" => {
                for o in opts.split(',') {
                    mounts.entry(o.to_string()).or_insert(PathBuf::from(point));
                }
            }
            _ => {}
        }
    }
    let mut dirs = HashMap::new();
    for l in proc_cgroup.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path.contains("..") {
            continue;
        }
        for c in controllers.split(',') {
            if let Some(m) = mounts.get(c) {
                dirs.insert(c.to_string(), m.join(path.trim_start_matches('/')));
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";

    #[test]
    fn finds_each_controllers_dir() {
        let c = "12:pids:/crid/p/c\n4:cpu,cpuacct:/crid/p/c\n5:memory:/crid/p/c\n0::/crid/p/c\n";
        let d = controller_dirs(c, MOUNTINFO);
        assert_eq!(d["memory"], PathBuf::from("/sys/fs/cgroup/memory/crid/p/c"));
        assert_eq!(
            d["cpuacct"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/crid/p/c")
        );
        assert_eq!(d["pids"], PathBuf::from("/sys/fs/cgroup/pids/crid/p/c"));
        assert_eq!(d[""], PathBuf::from("/sys/fs/cgroup/unified/crid/p/c"));
        assert!(controller_dirs("5:memory:/a/../b\n", MOUNTINFO).is_empty());
    }
}
