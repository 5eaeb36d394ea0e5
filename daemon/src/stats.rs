//! Resource usage read from cgroups (v1 controllers, or cgroup v2 where a
//! controller has no v1 hierarchy) and from a pod's network namespace, as
//! the kubelet's CRI stats provider wants it: CPU time, memory working set
//! (usage minus inactive file pages, like cAdvisor), RSS, page faults,
//! process count, per-interface network counters.

use crate::cgroups::{CgroupFs, Hierarchy};
use std::collections::HashMap;
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

/// `key value` lines (memory.stat, cpu.stat) as a map.
fn parse_kv(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?.parse().ok()?))
        })
        .collect()
}

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
    // v1 accounts CPU in cpuacct; v2 in cpu.stat (always present).
    if let Some((dir, v2)) = dir_for(fs, hs, rel, "cpuacct").or_else(|| dir_for(fs, hs, rel, "cpu"))
    {
        s.cpu_ns = if v2 {
            fs.read(&dir.join("cpu.stat"))
                .ok()
                .and_then(|t| parse_kv(&t).get("usage_usec").map(|u| u * 1000))
        } else {
            read_u64(fs, dir.join("cpuacct.usage"))
        };
    }
    if let Some((dir, v2)) = dir_for(fs, hs, rel, "memory") {
        let stat = fs.read(&dir.join("memory.stat")).unwrap_or_default();
        let kv = parse_kv(&stat);
        let (usage_file, limit_file, inactive, rss, pgfault, pgmaj) = if v2 {
            (
                "memory.current",
                "memory.max",
                "inactive_file",
                "anon",
                "pgfault",
                "pgmajfault",
            )
        } else {
            (
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "total_inactive_file",
                "total_rss",
                "total_pgfault",
                "total_pgmajfault",
            )
        };
        s.memory_usage = read_u64(fs, dir.join(usage_file));
        s.working_set = s
            .memory_usage
            .map(|u| u.saturating_sub(kv.get(inactive).copied().unwrap_or(0)));
        s.rss = kv.get(rss).copied();
        s.page_faults = kv.get(pgfault).copied();
        s.major_page_faults = kv.get(pgmaj).copied();
        // "max" (v2) does not parse: unlimited.
        s.memory_limit = read_u64(fs, dir.join(limit_file)).filter(|l| *l < UNLIMITED);
        if v2 {
            s.swap_usage = read_u64(fs, dir.join("memory.swap.current"));
            s.swap_limit = read_u64(fs, dir.join("memory.swap.max")).filter(|l| *l < UNLIMITED);
        } else if let Some(memsw) = read_u64(fs, dir.join("memory.memsw.usage_in_bytes")) {
            // Without swap accounting (no memsw files) swap is not reported.
            s.swap_usage = s.memory_usage.map(|u| memsw.saturating_sub(u));
            s.swap_limit = read_u64(fs, dir.join("memory.memsw.limit_in_bytes"))
                .filter(|l| *l < UNLIMITED)
                .zip(s.memory_limit)
                .map(|(sw, m)| sw.saturating_sub(m));
        }
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
    }
    s
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
                rx_errors: *n.get(2)?,
                tx_bytes: *n.get(8)?,
                tx_errors: *n.get(10)?,
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
            ("/sys/fs/cgroup/unified/cgroup.controllers".into(), "\n".into()),
        ]));
        let s = read(&files, &hs, d);
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
                "usage_usec 42\nuser_usec 40\n".into(),
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
                rx_errors: 3,
                tx_bytes: 4000,
                tx_errors: 5,
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
