//! Resource usage read from cgroups (v1 controllers, or cgroup v2 where a
//! controller has no v1 hierarchy) and from a pod's network namespace, as
//! the kubelet's CRI stats provider wants it: CPU time, memory working set
//! (usage minus inactive file pages, like cAdvisor), RSS, page faults,
//! process count, per-interface network counters.

use crate::cgroups::{CgroupFs, Hierarchy};
use crid_common::cgroup_io::{device, parse_kv};
pub use crid_common::cgroup_io::{parse_io_stat, DeviceIo};
use std::path::PathBuf;

/// Usage of one cgroup; `None` where the file is missing or unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time used, ns.
    pub cpu_ns: Option<u64>,
    /// Memory usage (incl. page cache), bytes.
    pub memory_usage: Option<u64>,
    /// Usage minus inactive file pages, bytes.
    pub working_set: Option<u64>,
    /// Anonymous + swap cache memory, bytes.
    pub rss: Option<u64>,
    /// Page faults.
    pub page_faults: Option<u64>,
    /// Major page faults.
    pub major_page_faults: Option<u64>,
    /// The memory limit (None: unlimited).
    pub memory_limit: Option<u64>,
    /// Processes (tasks) in the cgroup.
    pub pids: Option<u64>,
    /// Swap in use (v1: memsw usage − memory usage; v2: memory.swap.current).
    pub swap_usage: Option<u64>,
    /// The swap limit on its own (v1: memsw limit − memory limit; v2:
    /// memory.swap.max); None: unlimited or unknown.
    pub swap_limit: Option<u64>,
    /// Pressure stall information (cgroup v2 `*.pressure` files).
    pub psi: Psi,
    /// CPU time in user mode, ns.
    pub cpu_user_ns: Option<u64>,
    /// CPU time in kernel mode, ns.
    pub cpu_system_ns: Option<u64>,
    /// CFS enforcement periods elapsed.
    pub cfs_periods: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub cfs_throttled_periods: Option<u64>,
    /// Time throttled, ns.
    pub cfs_throttled_ns: Option<u64>,
    /// Page cache, bytes.
    pub cache: Option<u64>,
    /// Memory-mapped files, bytes.
    pub mapped_file: Option<u64>,
    /// Kernel memory, bytes.
    pub kernel: Option<u64>,
    /// Highest usage seen (v1 `max_usage_in_bytes`, v2 `memory.peak`).
    pub max_usage: Option<u64>,
    /// Times the usage hit the limit (v1 `failcnt`, v2 `memory.events max`).
    pub failcnt: Option<u64>,
    /// The pids limit (None: unlimited or unknown).
    pub pids_max: Option<u64>,
    /// Block I/O per device.
    pub io: Vec<DeviceIo>,
}

/// Pressure stall information of one cgroup; `None` where the kernel or the
/// hierarchy does not provide it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Psi {
    /// `cpu.pressure`.
    pub cpu: Option<Pressure>,
    /// `memory.pressure`.
    pub memory: Option<Pressure>,
    /// `io.pressure`.
    pub io: Option<Pressure>,
}

/// One `*.pressure` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressure {
    /// The `some` line.
    pub some: PressureLine,
    /// The `full` line.
    pub full: PressureLine,
}

/// One line of a `*.pressure` file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    /// Total stall time, µs.
    pub total: u64,
    /// Share stalled over 10 s (0..1; the file says percent).
    pub avg10: f64,
    /// Over 60 s.
    pub avg60: f64,
    /// Over 300 s.
    pub avg300: f64,
}

/// Parses a `*.pressure` file (`some avg10=.. avg60=.. avg300=.. total=..`,
/// then `full ...`); None if it has no `some` line.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut p = Pressure::default();
    let mut some = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let target = match f.next() {
            Some("some") => {
                some = true;
                &mut p.some
            }
            Some("full") => &mut p.full,
            _ => continue,
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "total" => target.total = v.parse().unwrap_or(0),
                "avg10" => target.avg10 = v.parse::<f64>().unwrap_or(0.0) / 100.0,
                "avg60" => target.avg60 = v.parse::<f64>().unwrap_or(0.0) / 100.0,
                "avg300" => target.avg300 = v.parse::<f64>().unwrap_or(0.0) / 100.0,
                _ => {}
            }
        }
    }
    some.then_some(p)
}

impl CgroupStats {
    /// Bytes left before the limit (None without a limit).
    pub fn available(&self) -> Option<u64> {
        Some(self.memory_limit?.saturating_sub(self.working_set?))
    }

    /// Swap left before the swap limit (None without one).
    pub fn swap_available(&self) -> Option<u64> {
        Some(self.swap_limit?.saturating_sub(self.swap_usage?))
    }
}

/// A limit this large means "no limit" (v1 reports ~2^63 rounded to pages).
const UNLIMITED: u64 = 1 << 62;

fn read_u64(fs: &dyn CgroupFs, p: PathBuf) -> Option<u64> {
    fs.read(&p).ok()?.trim().parse().ok()
}

/// The directory of cgroup `rel` in the v1 hierarchy with `controller`,
/// else in the cgroup v2 hierarchy (if `controller` is enabled there).
fn dir_for(
    fs: &dyn CgroupFs,
    hs: &[Hierarchy],
    rel: &str,
    controller: &str,
) -> Option<(PathBuf, bool)> {
    let rel = rel.trim_start_matches('/');
    if let Some(h) = hs
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == controller))
    {
        return Some((h.mount.join(rel), false));
    }
    let v2 = hs.iter().find(|h| h.controllers.is_empty())?;
    let enabled = fs.read(&v2.mount.join("cgroup.controllers")).ok()?;
    enabled
        .split_whitespace()
        .any(|c| c == controller)
        .then(|| (v2.mount.join(rel), true))
}

/// Reads the usage of cgroup `rel` (cgroupfs path, e.g. `/crid/<pod>/<ctr>`).
pub fn read(fs: &dyn CgroupFs, hs: &[Hierarchy], rel: &str) -> CgroupStats {
    let mut s = CgroupStats::default();
    read_cpu(fs, hs, rel, &mut s);
    if let Some((dir, v2)) = dir_for(fs, hs, rel, "memory") {
        read_memory(fs, &dir, v2, &mut s);
    }
    // PSI files exist in every cgroup2 directory, controllers or not (the
    // hybrid layout's unified mount has them too).
    if let Some(v2) = hs.iter().find(|h| h.controllers.is_empty()) {
        let dir = v2.mount.join(rel.trim_start_matches('/'));
        let read = |f: &str| fs.read(&dir.join(f)).ok().and_then(|t| parse_pressure(&t));
        s.psi = Psi {
            cpu: read("cpu.pressure"),
            memory: read("memory.pressure"),
            io: read("io.pressure"),
        };
    }
    if let Some((dir, _)) = dir_for(fs, hs, rel, "pids") {
        s.pids = read_u64(fs, dir.join("pids.current"));
        // "max" does not parse: unlimited.
        s.pids_max = read_u64(fs, dir.join("pids.max"));
    }
    if let Some((dir, v2)) = dir_for(fs, hs, rel, "blkio").or_else(|| dir_for(fs, hs, rel, "io")) {
        s.io = if v2 {
            fs.read(&dir.join("io.stat"))
                .map(|t| parse_io_stat(&t))
                .unwrap_or_default()
        } else {
            let file = |f: &str| fs.read(&dir.join(f)).unwrap_or_default();
            parse_blkio(
                &file("blkio.throttle.io_service_bytes_recursive"),
                &file("blkio.throttle.io_serviced_recursive"),
            )
        };
    }
    s
}

/// Nanoseconds per USER_HZ tick (`cpuacct.stat` counts in 1/100 s).
const NS_PER_TICK: u64 = 10_000_000;

fn read_cpu(fs: &dyn CgroupFs, hs: &[Hierarchy], rel: &str, s: &mut CgroupStats) {
    // v1 accounts CPU in cpuacct; v2 in cpu.stat (always present).
    if let Some((dir, v2)) = dir_for(fs, hs, rel, "cpuacct").or_else(|| dir_for(fs, hs, rel, "cpu"))
    {
        if v2 {
            let stat = fs.read(&dir.join("cpu.stat")).unwrap_or_default();
            let kv = parse_kv(&stat);
            let us = |k: &str| kv.get(k).map(|u| u * 1000);
            s.cpu_ns = us("usage_usec");
            s.cpu_user_ns = us("user_usec");
            s.cpu_system_ns = us("system_usec");
            s.cfs_periods = kv.get("nr_periods").copied();
            s.cfs_throttled_periods = kv.get("nr_throttled").copied();
            s.cfs_throttled_ns = us("throttled_usec");
            return;
        }
        s.cpu_ns = read_u64(fs, dir.join("cpuacct.usage"));
        let stat = fs.read(&dir.join("cpuacct.stat")).unwrap_or_default();
        let kv = parse_kv(&stat);
        s.cpu_user_ns = kv.get("user").map(|t| t * NS_PER_TICK);
        s.cpu_system_ns = kv.get("system").map(|t| t * NS_PER_TICK);
    }
    if let Some((dir, false)) = dir_for(fs, hs, rel, "cpu") {
        let stat = fs.read(&dir.join("cpu.stat")).unwrap_or_default();
        let kv = parse_kv(&stat);
        s.cfs_periods = kv.get("nr_periods").copied();
        s.cfs_throttled_periods = kv.get("nr_throttled").copied();
        s.cfs_throttled_ns = kv.get("throttled_time").copied();
    }
}

fn read_memory(fs: &dyn CgroupFs, dir: &std::path::Path, v2: bool, s: &mut CgroupStats) {
    let stat = fs.read(&dir.join("memory.stat")).unwrap_or_default();
    let kv = parse_kv(&stat);
    let k = |v1: &str, v2name: &str| kv.get(if v2 { v2name } else { v1 }).copied();
    let file = |v1: &str, v2name: &str| read_u64(fs, dir.join(if v2 { v2name } else { v1 }));
    s.memory_usage = file("memory.usage_in_bytes", "memory.current");
    s.working_set = s
        .memory_usage
        .map(|u| u.saturating_sub(k("total_inactive_file", "inactive_file").unwrap_or(0)));
    s.rss = k("total_rss", "anon");
    s.page_faults = k("total_pgfault", "pgfault");
    s.major_page_faults = k("total_pgmajfault", "pgmajfault");
    s.cache = k("total_cache", "file");
    s.mapped_file = k("total_mapped_file", "file_mapped");
    // "max" (v2) does not parse: unlimited.
    s.memory_limit = file("memory.limit_in_bytes", "memory.max").filter(|l| *l < UNLIMITED);
    s.max_usage = file("memory.max_usage_in_bytes", "memory.peak");
    if v2 {
        s.kernel = kv
            .get("kernel")
            .copied()
            .or_else(|| Some(kv.get("kernel_stack")? + kv.get("slab")?));
        s.failcnt = fs
            .read(&dir.join("memory.events"))
            .ok()
            .and_then(|t| parse_kv(&t).get("max").copied());
        s.swap_usage = read_u64(fs, dir.join("memory.swap.current"));
        s.swap_limit = read_u64(fs, dir.join("memory.swap.max")).filter(|l| *l < UNLIMITED);
    } else {
        s.kernel = read_u64(fs, dir.join("memory.kmem.usage_in_bytes"));
        s.failcnt = read_u64(fs, dir.join("memory.failcnt"));
        if let Some(memsw) = read_u64(fs, dir.join("memory.memsw.usage_in_bytes")) {
            // Without swap accounting (no memsw files) swap is not reported.
            s.swap_usage = s.memory_usage.map(|u| memsw.saturating_sub(u));
            s.swap_limit = read_u64(fs, dir.join("memory.memsw.limit_in_bytes"))
                .filter(|l| *l < UNLIMITED)
                .zip(s.memory_limit)
                .map(|(sw, m)| sw.saturating_sub(m));
        }
    }
}

/// cgroup v1 `blkio.throttle.io_service_bytes_recursive` and
/// `io_serviced_recursive` (`8:0 Read 4096` lines, then `Total`).
pub fn parse_blkio(bytes: &str, ops: &str) -> Vec<DeviceIo> {
    let mut out: Vec<DeviceIo> = Vec::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, v] = f[..] else {
                continue;
            };
            let (Some((major, minor)), Ok(v)) = (device(dev), v.parse::<u64>()) else {
                continue;
            };
            let i = match out
                .iter()
                .position(|d| (d.major, d.minor) == (major, minor))
            {
                Some(i) => i,
                None => {
                    out.push(DeviceIo {
                        major,
                        minor,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let d = &mut out[i];
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes = v,
                ("Write", true) => d.write_bytes = v,
                ("Read", false) => d.reads = v,
                ("Write", false) => d.writes = v,
                _ => {}
            }
        }
    }
    out
}

/// Processes of a cgroup as /proc shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Processes.
    pub processes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Open sockets.
    pub sockets: u64,
}

/// Counts the processes of a leaf cgroup (its `cgroup.procs`), their
/// threads, file descriptors and sockets; `proc_dir` is /proc. A process
/// that exits meanwhile is skipped.
pub fn proc_stats(
    fs: &dyn CgroupFs,
    hs: &[Hierarchy],
    rel: &str,
    proc_dir: &std::path::Path,
) -> Option<ProcStats> {
    let (dir, _) = dir_for(fs, hs, rel, "pids").or_else(|| dir_for(fs, hs, rel, "memory"))?;
    let procs = fs.read(&dir.join("cgroup.procs")).ok()?;
    let mut st = ProcStats::default();
    for pid in procs
        .split_whitespace()
        .filter(|p| p.parse::<u32>().is_ok())
    {
        let base = proc_dir.join(pid);
        let Ok(tasks) = std::fs::read_dir(base.join("task")) else {
            continue;
        };
        st.processes += 1;
        st.threads += tasks.count() as u64;
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                st.fds += 1;
                let sock = std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
                st.sockets += u64::from(sock);
            }
        }
    }
    Some(st)
}

/// Counters of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets dropped while receiving.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped while sending.
    pub tx_dropped: u64,
}

/// Parses `/proc/<pid>/net/dev` (the interfaces of that process's network
/// namespace), leaving out loopback.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs ...
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: *n.first()?,
                rx_packets: *n.get(1)?,
                rx_errors: *n.get(2)?,
                rx_dropped: *n.get(3)?,
                tx_bytes: *n.get(8)?,
                tx_packets: *n.get(9)?,
                tx_errors: *n.get(10)?,
                tx_dropped: *n.get(11)?,
            })
        })
        .collect()
}

/// CPU rate between two samples, in nanocores (1e9 = one core busy).
pub fn nano_cores(prev: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let dt = now.0.checked_sub(prev.0).filter(|d| *d > 0)? as u128;
    let du = now.1.checked_sub(prev.1)? as u128;
    u64::try_from(du * 1_000_000_000 / dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    struct Files(HashMap<PathBuf, String>);
    impl CgroupFs for Files {
        fn exists(&self, p: &Path) -> bool {
            self.0.contains_key(p)
        }
        fn mkdir(&self, _p: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn rmdir(&self, _p: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn read(&self, p: &Path) -> std::io::Result<String> {
            self.0
                .get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn write(&self, _p: &Path, _v: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn subdirs(&self, _p: &Path) -> std::io::Result<Vec<PathBuf>> {
            Ok(vec![])
        }
    }

    fn h(mount: &str, ctrls: &[&str]) -> Hierarchy {
        Hierarchy {
            mount: mount.into(),
            controllers: ctrls.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn v1_controllers_win_over_the_hybrid_unified_mount() {
        let hs = [
            h("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            h("/sys/fs/cgroup/memory", &["memory"]),
            h("/sys/fs/cgroup/pids", &["pids"]),
            h("/sys/fs/cgroup/unified", &[]),
        ];
        let d = "/crid/p/c";
        let files = Files(HashMap::from([
            ("/sys/fs/cgroup/cpu,cpuacct/crid/p/c/cpuacct.usage".into(), "123456\n".into()),
            ("/sys/fs/cgroup/memory/crid/p/c/memory.usage_in_bytes".into(), "10000\n".into()),
            ("/sys/fs/cgroup/memory/crid/p/c/memory.limit_in_bytes".into(), "9223372036854771712\n".into()),
            (
                "/sys/fs/cgroup/memory/crid/p/c/memory.stat".into(),
                "cache 9\nrss 1\ntotal_inactive_file 4000\ntotal_rss 5000\ntotal_pgfault 7\ntotal_pgmajfault 2\n".into(),
            ),
            ("/sys/fs/cgroup/pids/crid/p/c/pids.current".into(), "3\n".into()),
            ("/sys/fs/cgroup/pids/crid/p/c/pids.max".into(), "max\n".into()),
            ("/sys/fs/cgroup/unified/cgroup.controllers".into(), "\n".into()),
        ]));
        let s = read(&files, &hs, d);
        assert_eq!(s.pids_max, None, "max: unlimited");
        assert_eq!(s.cpu_ns, Some(123456));
        assert_eq!(s.memory_usage, Some(10000));
        assert_eq!(s.working_set, Some(6000));
        assert_eq!(s.rss, Some(5000));
        assert_eq!((s.page_faults, s.major_page_faults), (Some(7), Some(2)));
        assert_eq!(s.memory_limit, None, "v1's huge limit is no limit");
        assert_eq!(s.available(), None);
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.swap_usage, None, "no memsw files: no swap accounting");
    }

    #[test]
    fn v1_cpu_split_throttling_memory_details_and_blkio() {
        let hs = [
            h("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            h("/sys/fs/cgroup/memory", &["memory"]),
            h("/sys/fs/cgroup/blkio", &["blkio"]),
            h("/sys/fs/cgroup/pids", &["pids"]),
        ];
        let (c, m, b) = (
            "/sys/fs/cgroup/cpu,cpuacct/p/c/",
            "/sys/fs/cgroup/memory/p/c/",
            "/sys/fs/cgroup/blkio/p/c/",
        );
        let files = Files(HashMap::from([
            (
                format!("{c}cpuacct.stat").into(),
                "user 250\nsystem 40\n".into(),
            ),
            (
                format!("{c}cpu.stat").into(),
                "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000000\n".into(),
            ),
            (
                format!("{m}memory.stat").into(),
                "total_cache 300\ntotal_mapped_file 100\n".into(),
            ),
            (
                format!("{m}memory.kmem.usage_in_bytes").into(),
                "77\n".into(),
            ),
            (
                format!("{m}memory.max_usage_in_bytes").into(),
                "9999\n".into(),
            ),
            (format!("{m}memory.failcnt").into(), "5\n".into()),
            (
                format!("{b}blkio.throttle.io_service_bytes_recursive").into(),
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 1\nTotal 12289\n".into(),
            ),
            (
                format!("{b}blkio.throttle.io_serviced_recursive").into(),
                "8:0 Read 1\n8:0 Write 2\nTotal 3\n".into(),
            ),
            ("/sys/fs/cgroup/pids/p/c/pids.max".into(), "512\n".into()),
        ]));
        let s = read(&files, &hs, "/p/c");
        assert_eq!(s.cpu_user_ns, Some(2_500_000_000), "USER_HZ ticks");
        assert_eq!(s.cpu_system_ns, Some(400_000_000));
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns),
            (Some(10), Some(4), Some(2_000_000_000))
        );
        assert_eq!(
            (s.cache, s.mapped_file, s.kernel),
            (Some(300), Some(100), Some(77))
        );
        assert_eq!((s.max_usage, s.failcnt), (Some(9999), Some(5)));
        assert_eq!(s.pids_max, Some(512));
        assert_eq!(
            s.io,
            [
                DeviceIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 1,
                    writes: 2
                },
                DeviceIo {
                    major: 8,
                    minor: 16,
                    read_bytes: 1,
                    ..Default::default()
                }
            ]
        );
    }

    #[test]
    fn processes_threads_fds_and_sockets_of_a_cgroup() {
        let proc = tempfile::tempdir().unwrap();
        let p = proc.path();
        for (pid, threads, fds) in [("10", 2, 3), ("11", 1, 1)] {
            for t in 0..threads {
                std::fs::create_dir_all(p.join(pid).join("task").join(t.to_string())).unwrap();
            }
            std::fs::create_dir_all(p.join(pid).join("fd")).unwrap();
            for f in 0..fds {
                std::os::unix::fs::symlink("/dev/null", p.join(pid).join("fd").join(f.to_string()))
                    .unwrap();
            }
        }
        std::os::unix::fs::symlink("socket:[1234]", p.join("10/fd/9")).unwrap();
        let hs = [h("/sys/fs/cgroup/pids", &["pids"])];
        let files = Files(HashMap::from([(
            "/sys/fs/cgroup/pids/p/c/cgroup.procs".into(),
            // 12 exited meanwhile.
            "10\n11\n12\n".into(),
        )]));
        assert_eq!(
            proc_stats(&files, &hs, "/p/c", p),
            Some(ProcStats {
                processes: 2,
                threads: 3,
                fds: 5,
                sockets: 1
            })
        );
        assert_eq!(proc_stats(&files, &hs, "/gone", p), None);
    }

    #[test]
    fn v1_swap_is_memsw_minus_memory_and_psi_comes_from_the_unified_mount() {
        let hs = [
            h("/sys/fs/cgroup/memory", &["memory"]),
            h("/sys/fs/cgroup/unified", &[]),
        ];
        let m = "/sys/fs/cgroup/memory/p/c/";
        let files = Files(HashMap::from([
            (format!("{m}memory.usage_in_bytes").into(), "10000\n".into()),
            (format!("{m}memory.limit_in_bytes").into(), "20000\n".into()),
            (format!("{m}memory.memsw.usage_in_bytes").into(), "14096\n".into()),
            (format!("{m}memory.memsw.limit_in_bytes").into(), "30000\n".into()),
            ("/sys/fs/cgroup/unified/cgroup.controllers".into(), "\n".into()),
            (
                "/sys/fs/cgroup/unified/p/c/cpu.pressure".into(),
                "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n".into(),
            ),
            (
                "/sys/fs/cgroup/unified/p/c/io.pressure".into(),
                "some avg10=0.00 avg60=50.00 avg300=0.00 total=99\n".into(),
            ),
        ]));
        let s = read(&files, &hs, "/p/c");
        assert_eq!(s.swap_usage, Some(4096));
        assert_eq!(s.swap_limit, Some(10000));
        assert_eq!(s.swap_available(), Some(10000 - 4096));
        let cpu = s.psi.cpu.unwrap();
        assert_eq!(cpu.some.total, 1234);
        assert!((cpu.some.avg10 - 0.015).abs() < 1e-9);
        assert_eq!(cpu.full.total, 7);
        assert_eq!(s.psi.io.unwrap().some.avg60, 0.5);
        assert_eq!(s.psi.memory, None);
    }

    #[test]
    fn pressure_files_parse_or_are_absent() {
        assert_eq!(parse_pressure(""), None);
        assert_eq!(parse_pressure("garbage\n"), None);
        let p = parse_pressure("some avg10=0.00 avg60=0.00 avg300=2.00 total=5\n").unwrap();
        assert_eq!((p.some.total, p.some.avg300), (5, 0.02));
        assert_eq!(p.full, PressureLine::default());
    }

    #[test]
    fn pure_v2_reads_cpu_stat_and_memory_current() {
        let hs = [h("/sys/fs/cgroup", &[])];
        let files = Files(HashMap::from([
            (
                "/sys/fs/cgroup/cgroup.controllers".into(),
                "cpuset cpu io memory pids\n".into(),
            ),
            (
                "/sys/fs/cgroup/k/c/cpu.stat".into(),
                "usage_usec 42\nuser_usec 40\nsystem_usec 2\nnr_periods 6\nnr_throttled 1\nthrottled_usec 5\n".into(),
            ),
            ("/sys/fs/cgroup/k/c/memory.events".into(), "low 0\nhigh 0\nmax 3\noom 1\n".into()),
            ("/sys/fs/cgroup/k/c/memory.peak".into(), "10000\n".into()),
            (
                "/sys/fs/cgroup/k/c/io.stat".into(),
                "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n".into(),
            ),
            ("/sys/fs/cgroup/k/c/memory.current".into(), "8192\n".into()),
            ("/sys/fs/cgroup/k/c/memory.max".into(), "16384\n".into()),
            (
                "/sys/fs/cgroup/k/c/memory.stat".into(),
                "anon 4096\ninactive_file 1024\npgfault 9\npgmajfault 1\n".into(),
            ),
            ("/sys/fs/cgroup/k/c/pids.current".into(), "1\n".into()),
        ]));
        let s = read(&files, &hs, "k/c");
        assert_eq!(s.cpu_ns, Some(42_000));
        assert_eq!(s.working_set, Some(7168));
        assert_eq!(s.available(), Some(16384 - 7168));
        assert_eq!(s.rss, Some(4096));
        assert_eq!(s.pids, Some(1));
        assert_eq!(s.swap_usage, None);
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (Some(40_000), Some(2_000))
        );
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns),
            (Some(6), Some(1), Some(5_000))
        );
        assert_eq!((s.failcnt, s.max_usage), (Some(3), Some(10000)));
        assert_eq!(s.io.len(), 1);
        assert_eq!((s.io[0].read_bytes, s.io[0].writes), (10, 2));
        // memory.max "max": unlimited.
        let mut f = files;
        f.0.insert("/sys/fs/cgroup/k/c/memory.max".into(), "max\n".into());
        assert_eq!(read(&f, &hs, "k/c").memory_limit, None);
    }

    #[test]
    fn missing_cgroup_gives_no_figures() {
        let hs = [h("/sys/fs/cgroup/memory", &["memory"])];
        let s = read(&Files(HashMap::new()), &hs, "/gone");
        assert_eq!(s, CgroupStats::default());
    }

    #[test]
    fn net_dev_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2000      20    3    0    0     0          0         0     4000      40    5    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            [InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 2000,
                rx_packets: 20,
                rx_errors: 3,
                rx_dropped: 0,
                tx_bytes: 4000,
                tx_packets: 40,
                tx_errors: 5,
                tx_dropped: 0,
            }]
        );
    }

    #[test]
    fn nano_cores_from_two_samples() {
        assert_eq!(
            nano_cores((0, 0), (1_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        assert_eq!(nano_cores((5, 10), (5, 20)), None, "no time passed");
        assert_eq!(nano_cores((0, 10), (10, 5)), None, "counter went back");
    }
}
