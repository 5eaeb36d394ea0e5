//! cgroup resources, oom_score_adj and the cgroups path.
//!
//! Mirrors containerd's `customopts.WithResources` and `WithOOMScoreAdj` (CRI
//! plugin 1.6/1.7): fields are mapped as given (the kubelet already turned
//! millicores into shares and quota), zero means "not set"; a memory limit
//! without a swap limit sets swap = limit when the swap controller exists (no
//! swapping by default); hugepage limits are skipped when the hugetlb controller
//! is missing (containerd's default `tolerate_missing_hugetlb_controller = true`);
//! `unified` is copied through, on cgroup v2 only. An oom_score_adj below crid's
//! own is raised to it (`restrict_oom_score_adj`), since crid may lack
//! CAP_SYS_RESOURCE. The cgroups path is `<cgroup_parent>/<container id>`
//! (`getCgroupsPath`, cgroupfs driver).
//!
//! The CRI has no pids limit per container (the kubelet limits pids on the pod
//! cgroup); on cgroup v2 a `pids.max` in `unified` passes through.

use super::{HostFacts, SpecError};
use crid_proto::cri::{ContainerConfig, LinuxContainerResources};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResources,
};
use std::path::{Component, Path, PathBuf};

/// The container's resources (device rules are added by the caller).
pub fn resources(config: &ContainerConfig, host: &HostFacts) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResources::default();
    let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(out);
    };
    out.set_cpu(Some(cpu(r)?));
    let mut mem = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes != 0 {
        mem = mem.limit(r.memory_limit_in_bytes);
        if r.memory_swap_limit_in_bytes == 0 && host.swap_controller {
            mem = mem.swap(r.memory_limit_in_bytes);
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap_controller {
        mem = mem.swap(r.memory_swap_limit_in_bytes);
    }
    out.set_memory(Some(mem.build().map_err(built)?));

    if !r.hugepage_limits.is_empty() {
        if host.hugetlb_controller {
            let mut limits = Vec::new();
            for h in &r.hugepage_limits {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::InvalidArgument(format!(
                        "hugepage limit {} for {} is out of range",
                        h.limit, h.page_size
                    ))
                })?;
                limits.push(
                    LinuxHugepageLimitBuilder::default()
                        .page_size(h.page_size.clone())
                        .limit(limit)
                        .build()
                        .map_err(built)?,
                );
            }
            out.set_hugepage_limits(Some(limits));
        } else {
            tracing::warn!("hugetlb cgroup controller is absent: skipping hugepage limits");
        }
    }

    if !r.unified.is_empty() {
        if !host.cgroup_v2 {
            return Err(SpecError::FailedPrecondition(
                "unified (cgroup v2) resources requested on a cgroup v1 node".into(),
            ));
        }
        out.set_unified(Some(r.unified.clone()));
    }
    Ok(out)
}

fn cpu(r: &LinuxContainerResources) -> Result<oci_spec::runtime::LinuxCpu, SpecError> {
    let mut b = LinuxCpuBuilder::default();
    if r.cpu_period != 0 {
        b = b.period(non_negative(r.cpu_period, "cpu_period")?);
    }
    if r.cpu_quota != 0 {
        b = b.quota(r.cpu_quota);
    }
    if r.cpu_shares != 0 {
        b = b.shares(non_negative(r.cpu_shares, "cpu_shares")?);
    }
    if !r.cpuset_cpus.is_empty() {
        b = b.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        b = b.mems(r.cpuset_mems.clone());
    }
    b.build().map_err(built)
}

fn non_negative(v: i64, what: &str) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| SpecError::InvalidArgument(format!("{what} {v} is negative")))
}

fn built(e: oci_spec::OciSpecError) -> SpecError {
    SpecError::InvalidArgument(format!("building resources: {e}"))
}

/// The process's oom_score_adj: `None` when the config has no resources (runc
/// then leaves the shim's), else the requested value, raised to crid's own.
pub fn oom_score_adj(config: &ContainerConfig, host: &HostFacts) -> Result<Option<i32>, SpecError> {
    let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(None);
    };
    let want = i32::try_from(r.oom_score_adj)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or_else(|| {
            SpecError::InvalidArgument(format!(
                "oom_score_adj {} is outside -1000..=1000",
                r.oom_score_adj
            ))
        })?;
    Ok(Some(match host.own_oom_score_adj {
        Some(own) if want < own => {
            tracing::info!(
                requested = want,
                applied = own,
                "oom_score_adj below crid's own: raised to crid's"
            );
            own
        }
        _ => want,
    }))
}

/// `<cgroup_parent>/<container id>`; `None` without a parent. A systemd
/// slice name as parent (the systemd cgroup driver) gives runc's systemd
/// syntax `<slice>:crid:<container id>` instead.
pub fn cgroups_path(cgroup_parent: &str, container_id: &str) -> Result<Option<PathBuf>, SpecError> {
    if cgroup_parent.is_empty() {
        return Ok(None);
    }
    if !cgroup_parent.starts_with('/') && cgroup_parent.ends_with(".slice") {
        crid_common::ids::check_component("container id", container_id)
            .map_err(|e| SpecError::InvalidArgument(e.to_string()))?;
        return Ok(Some(PathBuf::from(
            crate::systemd_cgroups::container_cgroups_path(cgroup_parent, container_id),
        )));
    }
    let parent = Path::new(cgroup_parent);
    if !parent.is_absolute() || parent.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::InvalidArgument(format!(
            "cgroup_parent {cgroup_parent:?} must be an absolute cgroupfs path without \"..\""
        )));
    }
    if container_id.is_empty() || container_id.contains('/') || container_id == ".." {
        return Err(SpecError::InvalidArgument(format!(
            "container id {container_id:?} cannot name a cgroup"
        )));
    }
    Ok(Some(parent.join(container_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::cri::{HugepageLimit, LinuxContainerConfig};
    use std::collections::HashMap;

    fn config(r: LinuxContainerResources) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r),
                security_context: None,
            }),
            ..Default::default()
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            swap_controller: true,
            hugetlb_controller: true,
            ..Default::default()
        }
    }

    #[test]
    fn fields_are_mapped_as_given() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            ..Default::default()
        };
        let out = resources(&config(r), &host()).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = out.memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        // No swap limit given: swap = limit (no swapping).
        assert_eq!(mem.swap(), Some(64 << 20));
        assert!(out.hugepage_limits().is_none());
        assert!(out.unified().is_none());
        assert!(out.pids().is_none());
    }

    #[test]
    fn zero_means_unset() {
        let out = resources(&config(Default::default()), &host()).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares(), cpu.cpus().clone()),
            (None, None, None, None)
        );
        let mem = out.memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (None, None));
        // No resources at all: nothing set.
        let out = resources(&ContainerConfig::default(), &host()).unwrap();
        assert!(out.cpu().is_none() && out.memory().is_none());
    }

    #[test]
    fn swap_limit_and_swap_controller() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        let out = resources(&config(r.clone()), &host()).unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(300));
        let no_swap = HostFacts {
            swap_controller: false,
            ..host()
        };
        let out = resources(&config(r), &no_swap).unwrap();
        assert_eq!(out.memory().unwrap().limit(), Some(100));
        assert_eq!(out.memory().unwrap().swap(), None);
    }

    #[test]
    fn negative_shares_or_period_are_rejected() {
        for r in [
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_period: -1,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                resources(&config(r), &host()),
                Err(SpecError::InvalidArgument(_))
            ));
        }
        // A quota of -1 means unlimited and passes through.
        let r = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        let out = resources(&config(r), &host()).unwrap();
        assert_eq!(out.cpu().clone().unwrap().quota(), Some(-1));
    }

    #[test]
    fn hugepages() {
        let r = LinuxContainerResources {
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Default::default()
        };
        let out = resources(&config(r.clone()), &host()).unwrap();
        let h = out.hugepage_limits().clone().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].page_size().as_str(), h[0].limit()), ("2MB", 4 << 20));
        assert_eq!((h[1].page_size().as_str(), h[1].limit()), ("1GB", 0));
        // Without the controller they are skipped, not fatal.
        let no_hugetlb = HostFacts {
            hugetlb_controller: false,
            ..host()
        };
        let out = resources(&config(r), &no_hugetlb).unwrap();
        assert!(out.hugepage_limits().is_none());
        let r = LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: u64::MAX,
            }],
            ..Default::default()
        };
        assert!(resources(&config(r), &host()).is_err());
    }

    #[test]
    fn unified_on_v2_only() {
        let r = LinuxContainerResources {
            unified: HashMap::from([
                ("memory.high".to_string(), "1000000".to_string()),
                ("pids.max".to_string(), "100".to_string()),
            ]),
            ..Default::default()
        };
        let v2 = HostFacts {
            cgroup_v2: true,
            ..host()
        };
        let out = resources(&config(r.clone()), &v2).unwrap();
        assert_eq!(out.unified().as_ref(), Some(&r.unified));
        assert!(matches!(
            resources(&config(r), &host()),
            Err(SpecError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn oom_score_adj_mapping_and_restriction() {
        let c = |v| {
            config(LinuxContainerResources {
                oom_score_adj: v,
                ..Default::default()
            })
        };
        assert_eq!(oom_score_adj(&c(0), &host()).unwrap(), Some(0));
        assert_eq!(oom_score_adj(&c(1000), &host()).unwrap(), Some(1000));
        assert_eq!(oom_score_adj(&c(-998), &host()).unwrap(), Some(-998));
        assert_eq!(
            oom_score_adj(&ContainerConfig::default(), &host()).unwrap(),
            None
        );
        let restricted = HostFacts {
            own_oom_score_adj: Some(-500),
            ..host()
        };
        assert_eq!(oom_score_adj(&c(-998), &restricted).unwrap(), Some(-500));
        assert_eq!(oom_score_adj(&c(-100), &restricted).unwrap(), Some(-100));
        assert!(oom_score_adj(&c(1001), &host()).is_err());
        assert!(oom_score_adj(&c(i64::MIN), &host()).is_err());
    }

    #[test]
    fn cgroups_path_under_parent() {
        assert_eq!(
            cgroups_path("/kubepods/besteffort/pod123", "abc").unwrap(),
            Some(PathBuf::from("/kubepods/besteffort/pod123/abc"))
        );
        assert_eq!(cgroups_path("", "abc").unwrap(), None);
        assert_eq!(
            cgroups_path("kubepods-pod1.slice", "abc").unwrap(),
            Some(PathBuf::from("kubepods-pod1.slice:crid:abc"))
        );
        assert!(cgroups_path("kubepods-pod1.slice", "a/b").is_err());
        assert!(cgroups_path("kubepods", "abc").is_err());
        assert!(cgroups_path("/kubepods/../x", "abc").is_err());
        assert!(cgroups_path("/kubepods", "a/b").is_err());
        assert!(cgroups_path("/kubepods", "").is_err());
    }
}
