//! The task API's `Stats`: the container's cgroup counters as containerd's
//! cgroups metrics (`io.containerd.cgroups.v1.Metrics` when the memory
//! controller is on a v1 hierarchy, else `io.containerd.cgroups.v2.Metrics`),
//! what `ctr task metrics` prints. crid itself reads the cgroups directly
//! for the CRI stats; this is for containerd's clients.
//!
//! The cgroup is found from the init's `/proc/<pid>/cgroup`, so the same
//! code serves the cgroupfs and systemd drivers.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use std::collections::HashMap;

/// Type URLs as containerd's typeurl names them; constants, not
/// descriptors, for the reason given in `events.rs`.
const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

/// USER_HZ, the unit of v1 `cpuacct.stat` on Linux.
const CLOCK_TICKS: u64 = 100;

/// The metrics of the cgroup of process `pid`, packed for containerd.
pub fn metrics(pid: u32) -> Result<Any, String> {
    let dirs = super::cgroup::dirs_of(pid)?;
    let read = |controller: &str, file: &str| {
        let dir = dirs.get(controller)?;
        std::fs::read_to_string(dir.join(file)).ok()
    };
    let (type_url, value) = if dirs.contains_key("memory") {
        (V1_METRICS, v1_metrics(&read).write_to_bytes())
    } else if dirs.contains_key("") {
        (V2_METRICS, v2_metrics(&|f| read("", f)).write_to_bytes())
    } else {
        return Err(format!("no cgroup found for process {pid}"));
    };
    Ok(Any {
        type_url: type_url.to_string(),
        value: value.map_err(|e| e.to_string())?,
        ..Default::default()
    })
}

/// A flat-keyed file, owned (the text is read per call).
fn kv(text: Option<String>) -> HashMap<String, u64> {
    crid_common::cgroup_io::parse_kv(&text.unwrap_or_default())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// One number; `max` (no limit) reads as 0, as containerd reports it.
fn num(text: Option<String>) -> u64 {
    text.and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

type Read<'a> = dyn Fn(&str, &str) -> Option<String> + 'a;

/// v1 metrics from the controllers' files.
pub fn v1_metrics(read: &Read) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = MessageField::some(v1::PidsStat {
        current: num(read("pids", "pids.current")),
        limit: num(read("pids", "pids.max")),
        ..Default::default()
    });
    let acct = kv(read("cpuacct", "cpuacct.stat"));
    let ticks = |k: &str| acct.get(k).copied().unwrap_or(0) * (1_000_000_000 / CLOCK_TICKS);
    let cpu = kv(read("cpu", "cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: num(read("cpuacct", "cpuacct.usage")),
            kernel: ticks("system"),
            user: ticks("user"),
            per_cpu: read("cpuacct", "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect(),
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: c("nr_periods"),
            throttled_periods: c("nr_throttled"),
            throttled_time: c("throttled_time"),
            ..Default::default()
        }),
        ..Default::default()
    });
    let s = kv(read("memory", "memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let entry = |prefix: &str| {
        MessageField::some(v1::MemoryEntry {
            usage: num(read("memory", &format!("{prefix}.usage_in_bytes"))),
            limit: num(read("memory", &format!("{prefix}.limit_in_bytes"))),
            max: num(read("memory", &format!("{prefix}.max_usage_in_bytes"))),
            failcnt: num(read("memory", &format!("{prefix}.failcnt"))),
            ..Default::default()
        })
    };
    m.memory = MessageField::some(v1::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: entry("memory"),
        swap: entry("memory.memsw"),
        kernel: entry("memory.kmem"),
        kernel_tcp: entry("memory.kmem.tcp"),
        ..Default::default()
    });
    let oom = kv(read("memory", "memory.oom_control"));
    let o = |k: &str| oom.get(k).copied().unwrap_or(0);
    m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
        oom_kill_disable: o("oom_kill_disable"),
        under_oom: o("under_oom"),
        oom_kill: o("oom_kill"),
        ..Default::default()
    });
    m.blkio = MessageField::some(v1::BlkIOStat {
        io_service_bytes_recursive: blkio(read(
            "blkio",
            "blkio.throttle.io_service_bytes_recursive",
        )),
        io_serviced_recursive: blkio(read("blkio", "blkio.throttle.io_serviced_recursive")),
        ..Default::default()
    });
    m
}

/// v1 blkio lines: `MAJ:MIN Op value` (the `Total` line has no device).
fn blkio(text: Option<String>) -> Vec<v1::BlkIOEntry> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(v1::BlkIOEntry {
                op: op.to_string(),
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

/// v2 metrics from the group's files.
pub fn v2_metrics(read: &dyn Fn(&str) -> Option<String>) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: num(read("pids.current")),
        limit: num(read("pids.max")),
        ..Default::default()
    });
    let cpu = kv(read("cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: c("usage_usec"),
        user_usec: c("user_usec"),
        system_usec: c("system_usec"),
        nr_periods: c("nr_periods"),
        nr_throttled: c("nr_throttled"),
        throttled_usec: c("throttled_usec"),
        nr_bursts: c("nr_bursts"),
        burst_usec: c("burst_usec"),
        ..Default::default()
    });
    let s = kv(read("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m.memory = MessageField::some(v2::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: num(read("memory.current")),
        usage_limit: num(read("memory.max")),
        swap_usage: num(read("memory.swap.current")),
        swap_limit: num(read("memory.swap.max")),
        max_usage: num(read("memory.peak")),
        ..Default::default()
    });
    let e = kv(read("memory.events"));
    let ev = |k: &str| e.get(k).copied().unwrap_or(0);
    m.memory_events = MessageField::some(v2::MemoryEvents {
        low: ev("low"),
        high: ev("high"),
        max: ev("max"),
        oom: ev("oom"),
        oom_kill: ev("oom_kill"),
        oom_group_kill: ev("oom_group_kill"),
        ..Default::default()
    });
    m.io = MessageField::some(v2::IOStat {
        usage: io_stat(read("io.stat")),
        ..Default::default()
    });
    m
}

/// v2 `io.stat` lines: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...`.
fn io_stat(text: Option<String>) -> Vec<v2::IOEntry> {
    crid_common::cgroup_io::parse_io_stat(&text.unwrap_or_default())
        .into_iter()
        .map(|d| v2::IOEntry {
            major: d.major,
            minor: d.minor,
            rbytes: d.read_bytes,
            wbytes: d.write_bytes,
            rios: d.reads,
            wios: d.writes,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_counters_land_in_their_fields() {
        let files: HashMap<(&str, &str), &str> = [
            (("pids", "pids.current"), "3\n"),
            (("pids", "pids.max"), "max\n"),
            (("cpuacct", "cpuacct.usage"), "123456789\n"),
            (("cpuacct", "cpuacct.stat"), "user 5\nsystem 2\n"),
            (("cpuacct", "cpuacct.usage_percpu"), "100 200 \n"),
            (
                ("cpu", "cpu.stat"),
                "nr_periods 10\nnr_throttled 4\nthrottled_time 99\n",
            ),
            (
                ("memory", "memory.stat"),
                "cache 4096\nrss 8192\ntotal_rss 8192\npgfault 7\n",
            ),
            (("memory", "memory.usage_in_bytes"), "12288\n"),
            (("memory", "memory.limit_in_bytes"), "67108864\n"),
            (
                ("memory", "memory.oom_control"),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            ),
            (
                ("blkio", "blkio.throttle.io_service_bytes_recursive"),
                "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n",
            ),
        ]
        .into_iter()
        .collect();
        let m = v1_metrics(&|c, f| files.get(&(c, f)).map(|s| s.to_string()));
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(m.cpu.usage.total, 123_456_789);
        assert_eq!(m.cpu.usage.user, 50_000_000);
        assert_eq!(m.cpu.usage.kernel, 20_000_000);
        assert_eq!(m.cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!(m.cpu.throttling.throttled_periods, 4);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.total_rss),
            (4096, 8192, 8192)
        );
        assert_eq!(m.memory.pg_fault, 7);
        assert_eq!(
            (m.memory.usage.usage, m.memory.usage.limit),
            (12288, 67_108_864)
        );
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        let b = &m.blkio.io_service_bytes_recursive;
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[1].op.as_str(), b[1].major, b[1].value),
            ("Write", 8, 1024)
        );
    }

    #[test]
    fn v2_counters_land_in_their_fields() {
        let files: HashMap<&str, &str> = [
            ("pids.current", "2\n"),
            ("pids.max", "100\n"),
            (
                "cpu.stat",
                "usage_usec 900\nuser_usec 600\nsystem_usec 300\nnr_throttled 1\n",
            ),
            ("memory.stat", "anon 4096\nfile 8192\npgmajfault 3\n"),
            ("memory.current", "16384\n"),
            ("memory.max", "max\n"),
            ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
            (
                "io.stat",
                "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
        ]
        .into_iter()
        .collect();
        let m = v2_metrics(&|f| files.get(f).map(|s| s.to_string()));
        assert_eq!((m.pids.current, m.pids.limit), (2, 100));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (900, 600, 300)
        );
        assert_eq!(m.cpu.nr_throttled, 1);
        assert_eq!(
            (m.memory.anon, m.memory.file, m.memory.pgmajfault),
            (4096, 8192, 3)
        );
        assert_eq!((m.memory.usage, m.memory.usage_limit), (16384, 0));
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (2, 1));
        let io = &m.io.usage;
        assert_eq!(io.len(), 1);
        assert_eq!((io[0].major, io[0].rbytes, io[0].wios), (8, 10, 2));
    }

    /// The live path on this process's own cgroup: packs a message of the
    /// hierarchy in use that decodes again.
    #[test]
    fn packs_the_own_cgroup() {
        let any = metrics(std::process::id()).unwrap();
        if any.type_url == V1_METRICS {
            let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
            assert!(m.cpu.usage.total > 0);
        } else {
            assert_eq!(any.type_url, V2_METRICS);
            v2::Metrics::parse_from_bytes(&any.value).unwrap();
        }
        assert!(metrics(u32::MAX).is_err());
    }
}
