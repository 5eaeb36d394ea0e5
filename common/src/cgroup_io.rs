//! Parsers of cgroup files as the kernel writes them (flat `key value`
//! files, per-device block I/O), used by the daemon (CRI stats) and the
//! helper (the shim's `Stats` and OOM counts).

use std::collections::HashMap;

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`): `key value` per line; lines that do not parse
/// are skipped.
pub fn parse_kv(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// Block I/O of a cgroup on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
}

/// `major:minor` of a blkio/io.stat line.
pub fn device(f: &str) -> Option<(u64, u64)> {
    let (a, b) = f.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// cgroup v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`).
pub fn parse_io_stat(text: &str) -> Vec<DeviceIo> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = device(f.next()?)?;
            let mut d = DeviceIo {
                major,
                minor,
                ..Default::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => d.read_bytes = v,
                    "wbytes" => d.write_bytes = v,
                    "rios" => d.reads = v,
                    "wios" => d.writes = v,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect()
}
