//! UpdateContainerResources, the pure part: validate the request, merge it
//! into the container's current OCI resources, and map OCI resources back to
//! the CRI `ContainerResources` that ContainerStatus reports.
//!
//! Mirrors containerd's CRI plugin 1.6/1.7 (`updateOCIResource` ->
//! `customopts.WithResources` over the container's current spec,
//! `copyResourcesToStatus`): a zero field means "keep the current value"; a
//! new memory limit without a swap limit sets swap = limit when the swap
//! controller exists; `unified` keys are set one by one. Two departures, both
//! safer: hugepage limits replace the current one of the same page size
//! (containerd appends duplicates), and values the kernel would refuse half-way
//! through a live update (negative limits, a swap limit below the memory
//! limit, a CFS quota under 1 ms, a period outside 1 ms..1 s, a malformed
//! cpuset) are refused up front with InvalidArgument. `oom_score_adj` cannot
//! change on a live process through the task update and is ignored, as
//! containerd does.

use crate::spec::{resources, HostFacts, SpecError};
use crid_proto::cri::{self, ContainerConfig, LinuxContainerConfig, LinuxContainerResources};
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources, Spec};

/// Checks values a live update must not try.
pub fn validate(r: &LinuxContainerResources) -> Result<(), SpecError> {
    let bad = |m: String| Err(SpecError::InvalidArgument(m));
    if r.memory_limit_in_bytes < 0 {
        return bad(format!(
            "memory_limit_in_bytes {} is negative",
            r.memory_limit_in_bytes
        ));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return bad(format!(
            "memory_swap_limit_in_bytes {} is below -1 (unlimited)",
            r.memory_swap_limit_in_bytes
        ));
    }
    if r.cpu_period != 0 && !(1_000..=1_000_000).contains(&r.cpu_period) {
        return bad(format!(
            "cpu_period {} is outside 1000..=1000000 microseconds",
            r.cpu_period
        ));
    }
    if r.cpu_quota != 0 && r.cpu_quota != -1 && r.cpu_quota < 1_000 {
        return bad(format!(
            "cpu_quota {} is below 1000 microseconds (and not -1, unlimited)",
            r.cpu_quota
        ));
    }
    if r.cpu_shares < 0 {
        return bad(format!("cpu_shares {} is negative", r.cpu_shares));
    }
    for (what, v) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !v.is_empty() && !valid_cpuset(v) {
            return bad(format!("{what} {v:?} is not a cpu list like 0-3,5"));
        }
    }
    Ok(())
}

/// `0-3,5,7-8`: comma-separated numbers and ascending ranges.
fn valid_cpuset(s: &str) -> bool {
    s.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let lo = ends.next().and_then(|n| n.parse::<u32>().ok());
        match (lo, ends.next()) {
            (Some(_), None) => true,
            (Some(lo), Some(hi)) => hi.parse::<u32>().is_ok_and(|hi| hi >= lo),
            _ => false,
        }
    })
}

/// The spec with `r` merged into its resources (the rest of the spec kept).
pub fn merge_into_spec(
    spec: &Spec,
    r: &LinuxContainerResources,
    host: &HostFacts,
) -> Result<Spec, SpecError> {
    validate(r)?;
    // The spec generator's mapping gives the requested values (zero = unset),
    // with the swap = limit default and the hugetlb/unified rules.
    let wanted = resources::resources(
        &ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r.clone()),
                security_context: None,
            }),
            ..Default::default()
        },
        host,
    )?;
    let mut out = spec.clone();
    let mut linux = out.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    overlay(&mut res, &wanted);
    if let Some(m) = res.memory() {
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap != -1 && swap < limit {
                return Err(SpecError::InvalidArgument(format!(
                    "memory_swap_limit_in_bytes {swap} is below the memory limit {limit}"
                )));
            }
        }
    }
    linux.set_resources(Some(res));
    out.set_linux(Some(linux));
    Ok(out)
}

/// Sets every field `wanted` has onto `res`.
fn overlay(res: &mut LinuxResources, wanted: &LinuxResources) {
    if let Some(w) = wanted.cpu() {
        let mut cpu: LinuxCpu = res.cpu().clone().unwrap_or_default();
        if w.period().is_some() {
            cpu.set_period(w.period());
        }
        if w.quota().is_some() {
            cpu.set_quota(w.quota());
        }
        if w.shares().is_some() {
            cpu.set_shares(w.shares());
        }
        if w.cpus().is_some() {
            cpu.set_cpus(w.cpus().clone());
        }
        if w.mems().is_some() {
            cpu.set_mems(w.mems().clone());
        }
        res.set_cpu(Some(cpu));
    }
    if let Some(w) = wanted.memory() {
        let mut mem: LinuxMemory = res.memory().unwrap_or_default();
        if w.limit().is_some() {
            mem.set_limit(w.limit());
        }
        if w.swap().is_some() {
            mem.set_swap(w.swap());
        }
        res.set_memory(Some(mem));
    }
    if let Some(w) = wanted.hugepage_limits() {
        let mut limits: Vec<LinuxHugepageLimit> = res.hugepage_limits().clone().unwrap_or_default();
        for h in w {
            limits.retain(|l| l.page_size() != h.page_size());
            limits.push(h.clone());
        }
        res.set_hugepage_limits(Some(limits));
    }
    if let Some(w) = wanted.unified() {
        let mut unified = res.unified().clone().unwrap_or_default();
        unified.extend(w.iter().map(|(k, v)| (k.clone(), v.clone())));
        res.set_unified(Some(unified));
    }
}

/// The resources a container runs with, as ContainerStatus reports them
/// (containerd's `copyResourcesToStatus`); `None` when the spec has none.
pub fn status_resources(spec: &Spec) -> Option<cri::ContainerResources> {
    let res = spec.linux().as_ref()?.resources().as_ref()?;
    let cpu = res.cpu().clone().unwrap_or_default();
    let mem = res.memory().unwrap_or_default();
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Some(cri::ContainerResources {
        linux: Some(LinuxContainerResources {
            cpu_period: cpu.period().map(clamp).unwrap_or(0),
            cpu_quota: cpu.quota().unwrap_or(0),
            cpu_shares: cpu.shares().map(clamp).unwrap_or(0),
            memory_limit_in_bytes: mem.limit().unwrap_or(0),
            memory_swap_limit_in_bytes: mem.swap().unwrap_or(0),
            oom_score_adj: spec
                .process()
                .as_ref()
                .and_then(|p| p.oom_score_adj())
                .map(i64::from)
                .unwrap_or(0),
            cpuset_cpus: cpu.cpus().clone().unwrap_or_default(),
            cpuset_mems: cpu.mems().clone().unwrap_or_default(),
            hugepage_limits: res
                .hugepage_limits()
                .as_ref()
                .map(|v| {
                    v.iter()
                        .map(|h| cri::HugepageLimit {
                            page_size: h.page_size().clone(),
                            limit: u64::try_from(h.limit()).unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            unified: res
                .unified()
                .as_ref()
                .map(|u| u.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }),
        windows: None,
    })
}

/// Type URL containerd's typeurl registers for `specs.LinuxResources` (the
/// task update payload, JSON).
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The spec's resources as the `Any` a containerd task update carries.
pub fn resources_any(spec: &Spec) -> Result<prost_types::Any, SpecError> {
    let res = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let value = serde_json::to_vec(&res).map_err(|e| {
        SpecError::io(
            "encoding the container's resources",
            std::io::Error::other(e),
        )
    })?;
    Ok(prost_types::Any {
        type_url: LINUX_RESOURCES_TYPE_URL.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::cri::HugepageLimit;
    use oci_spec::runtime::{LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, Process};
    use std::collections::HashMap;

    fn host() -> HostFacts {
        HostFacts {
            swap_controller: true,
            hugetlb_controller: true,
            ..Default::default()
        }
    }

    /// A spec created with 64 MiB (swap = limit), 512 shares, cpus 0, a device rule.
    fn spec() -> Spec {
        let mut res = LinuxResources::default();
        res.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(64i64 << 20)
                .build()
                .unwrap(),
        ));
        res.set_cpu(Some(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .cpus("0")
                .build()
                .unwrap(),
        ));
        res.set_devices(Some(vec![Default::default()]));
        let mut s = Spec::default();
        s.set_linux(Some(
            LinuxBuilder::default().resources(res).build().unwrap(),
        ));
        let mut p = Process::default();
        p.set_oom_score_adj(Some(300));
        s.set_process(Some(p));
        s
    }

    fn res(s: &Spec) -> LinuxResources {
        s.linux().clone().unwrap().resources().clone().unwrap()
    }

    #[test]
    fn zero_fields_keep_current_values() {
        let got = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        let r = res(&got);
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
        // Device rules and the rest of the spec are untouched.
        assert_eq!(r.devices().as_ref().map(Vec::len), Some(1));
        assert_eq!(got.process(), spec().process());
    }

    #[test]
    fn a_new_memory_limit_moves_swap_with_it() {
        let got = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        let m = res(&got).memory().unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(32 << 20), Some(32 << 20)));
        // Explicit swap wins; swap below the limit is refused.
        let got = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                memory_swap_limit_in_bytes: 100 << 20,
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        assert_eq!(res(&got).memory().unwrap().swap(), Some(100 << 20));
        let err = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                memory_swap_limit_in_bytes: 100 << 20,
                ..Default::default()
            },
            &host(),
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(m) if m.contains("swap")));
    }

    #[test]
    fn hugepages_replace_by_page_size_and_unified_needs_v2() {
        let h = |size: &str, limit| HugepageLimit {
            page_size: size.into(),
            limit,
        };
        let once = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                hugepage_limits: vec![h("2MB", 4 << 20), h("1GB", 0)],
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        let twice = merge_into_spec(
            &once,
            &LinuxContainerResources {
                hugepage_limits: vec![h("2MB", 8 << 20)],
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        let limits = res(&twice).hugepage_limits().clone().unwrap();
        let pairs: Vec<(String, i64)> = limits
            .iter()
            .map(|l| (l.page_size().clone(), l.limit()))
            .collect();
        assert_eq!(pairs, vec![("1GB".into(), 0), ("2MB".into(), 8 << 20)]);

        let unified = LinuxContainerResources {
            unified: HashMap::from([("memory.high".to_string(), "1000000".to_string())]),
            ..Default::default()
        };
        assert!(matches!(
            merge_into_spec(&spec(), &unified, &host()),
            Err(SpecError::FailedPrecondition(_))
        ));
        let v2 = HostFacts {
            cgroup_v2: true,
            ..host()
        };
        let got = merge_into_spec(&spec(), &unified, &v2).unwrap();
        assert_eq!(
            res(&got).unified().clone().unwrap().get("memory.high"),
            Some(&"1000000".to_string())
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for r in [
            LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_swap_limit_in_bytes: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_period: 10,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_quota: 500,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_cpus: "0-x".into(),
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_mems: "3-1".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    merge_into_spec(&spec(), &r, &host()),
                    Err(SpecError::InvalidArgument(_))
                ),
                "{r:?}"
            );
        }
        assert!(validate(&LinuxContainerResources {
            cpu_quota: -1,
            cpuset_cpus: "0-3,5".into(),
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn status_reports_what_the_spec_holds() {
        let got = merge_into_spec(
            &spec(),
            &LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                cpu_quota: 20_000,
                ..Default::default()
            },
            &host(),
        )
        .unwrap();
        let st = status_resources(&got).unwrap().linux.unwrap();
        assert_eq!(st.memory_limit_in_bytes, 32 << 20);
        assert_eq!(st.memory_swap_limit_in_bytes, 32 << 20);
        assert_eq!(st.cpu_quota, 20_000);
        assert_eq!(st.cpu_shares, 512);
        assert_eq!(st.cpuset_cpus, "0");
        assert_eq!(st.oom_score_adj, 300);
        let mut bare = Spec::default();
        bare.set_linux(None);
        assert!(status_resources(&bare).is_none());
    }

    #[test]
    fn task_update_payload_is_json_linux_resources() {
        let any = resources_any(&spec()).unwrap();
        assert_eq!(
            any.type_url,
            "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
        );
        let v: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        assert_eq!(v["memory"]["limit"], serde_json::json!(64 << 20));
        assert_eq!(v["cpu"]["shares"], serde_json::json!(512));
    }
}
