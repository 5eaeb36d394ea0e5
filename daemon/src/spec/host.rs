//! Reads [`HostFacts`] from the node once (at crid start). The parsing is pure
//! and tested; [`read_host_facts`] only gathers the files.
//!
//! Mirrors containerd's probes: cgroup v2 when /sys/fs/cgroup is a cgroup2 mount
//! (`cgroups.Mode() == Unified`), the swap controller by
//! `memory.memsw.limit_in_bytes` (v1) or `memory.swap.max` in our own cgroup (v2)
//! (`SwapControllerAvailable`), hugetlb by /sys/fs/cgroup/hugetlb (v1) or
//! `cgroup.controllers` (v2), and crid's own capabilities from `CapEff`
//! (`cap.Current()`), since runc cannot grant a container more than its caller has.
//! Security modules: seccomp when /proc/self/status has a `Seccomp:` line,
//! AppArmor by runc's test (/sys/kernel/security/apparmor exists and
//! /sys/module/apparmor/parameters/enabled starts with `Y`); the kernel release
//! from /proc/sys/kernel/osrelease.

use super::{security, HostFacts};
use std::io;
use std::path::Path;

/// The capability mask of a /proc/<pid>/status `CapEff:` line.
pub fn cap_eff_from_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// A kernel release as (major, minor, patch), ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parses `6.1`, `4.8.0` or a release like `6.18.44-amd64` (what follows
    /// the numbers is ignored); at least major and minor are required.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let end = release
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(release.len());
        let mut parts = release[..end].split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(KernelVersion(major, minor, patch))
    }
}

/// Whether the kernel has AppArmor enabled, from
/// /sys/module/apparmor/parameters/enabled (`None`: file absent).
pub fn apparmor_enabled_from(param: Option<&str>) -> bool {
    param.is_some_and(|p| p.starts_with('Y'))
}

/// The cgroup v2 path of /proc/self/cgroup (the `0::` line).
pub fn unified_cgroup_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
}

/// Gathers the node's facts from /proc and /sys/fs/cgroup.
pub fn read_host_facts() -> io::Result<HostFacts> {
    read_host_facts_from(Path::new("/sys/fs/cgroup"))
}

fn read_host_facts_from(cgroup_root: &Path) -> io::Result<HostFacts> {
    let cgroup_v2 = nix::sys::statfs::statfs(cgroup_root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .map_err(io::Error::from)?;
    let (swap_controller, hugetlb_controller) = if cgroup_v2 {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = unified_cgroup_path(&own)
            .unwrap_or("/")
            .trim_start_matches('/');
        let controllers =
            std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).unwrap_or_default();
        (
            cgroup_root.join(rel).join("memory.swap.max").exists(),
            controllers.split_whitespace().any(|c| c == "hugetlb"),
        )
    } else {
        (
            cgroup_root
                .join("memory/memory.memsw.limit_in_bytes")
                .exists(),
            cgroup_root.join("hugetlb").is_dir(),
        )
    };
    let own_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = cap_eff_from_status(&status)
        .ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))?;
    let apparmor_param = Path::new("/sys/kernel/security/apparmor")
        .exists()
        .then(|| std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").ok())
        .flatten();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| KernelVersion::parse(r.trim()));
    Ok(HostFacts {
        cgroup_v2,
        swap_controller,
        hugetlb_controller,
        own_oom_score_adj,
        capabilities: security::capabilities_from_mask(mask),
        seccomp_enabled: status.lines().any(|l| l.starts_with("Seccomp:")),
        apparmor_enabled: apparmor_enabled_from(apparmor_param.as_deref()),
        kernel,
        arch: std::env::consts::ARCH.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tcrid\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let mask = cap_eff_from_status(status).unwrap();
        assert_eq!(mask, 0x1fffeffffff);
        let caps = security::capabilities_from_mask(mask);
        // Bit 24 is CAP_SYS_RESOURCE: missing on this kind of machine.
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysResource));
        assert_eq!(cap_eff_from_status("Name:\tx\n"), None);
    }

    #[test]
    fn parses_unified_cgroup_path() {
        let v2 = "0::/kubepods/crid\n";
        assert_eq!(unified_cgroup_path(v2), Some("/kubepods/crid"));
        let hybrid = "12:memory:/x\n0::/y\n";
        assert_eq!(unified_cgroup_path(hybrid), Some("/y"));
        assert_eq!(unified_cgroup_path("3:cpu:/x\n"), None);
    }

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v1147"),
            Some(KernelVersion(6, 18, 44))
        );
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8, 0)));
        assert_eq!(
            KernelVersion::parse("5.10.0-rc1"),
            Some(KernelVersion(5, 10, 0))
        );
        assert_eq!(KernelVersion::parse("5"), None);
        assert_eq!(KernelVersion::parse("x.y"), None);
        assert!(KernelVersion(4, 8, 0) < KernelVersion(4, 10, 0));
        assert!(KernelVersion(6, 1, 0) > KernelVersion(5, 19, 9));
    }

    #[test]
    fn apparmor_parameter() {
        assert!(apparmor_enabled_from(Some("Y\n")));
        assert!(!apparmor_enabled_from(Some("N\n")));
        assert!(!apparmor_enabled_from(None));
    }

    #[test]
    fn reads_this_node() {
        // Whatever the node, the probe must agree with the files it reads.
        let facts = read_host_facts().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let mask = cap_eff_from_status(&status).unwrap();
        assert_eq!(facts.capabilities, security::capabilities_from_mask(mask));
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(facts.own_oom_score_adj, Some(own));
        let v2 = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
        assert_eq!(facts.cgroup_v2, v2);
        assert_eq!(facts.seccomp_enabled, status.contains("\nSeccomp:"));
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(facts.kernel, KernelVersion::parse(release.trim()));
        assert!(facts.kernel.is_some());
        // This test machine has no AppArmor; a node with it must say so.
        let param = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").ok();
        let has_fs = Path::new("/sys/kernel/security/apparmor").exists();
        assert_eq!(
            facts.apparmor_enabled,
            has_fs && param.is_some_and(|p| p.starts_with('Y'))
        );
    }
}
