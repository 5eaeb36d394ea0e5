//! crid's records and OCI specs as NRI's `PodSandbox` and `Container`, and
//! NRI resources as CRI resources (for updates plugins ask for).

use crate::container::record::{ContainerRecord, ContainerState};
use crate::sandbox::record::SandboxRecord;
use crid_proto::cri;
use crid_proto::nri;
use serde_json::Value;

/// The NRI view of a pod sandbox.
pub fn pod(r: &SandboxRecord) -> nri::PodSandbox {
    nri::PodSandbox {
        id: r.id.clone(),
        name: r.name.clone(),
        uid: r.uid.clone(),
        namespace: r.namespace.clone(),
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        runtime_handler: r.runtime_handler.clone(),
        linux: Some(nri::LinuxPodSandbox {
            cgroup_parent: r.cgroup_parent.clone(),
            cgroups_path: crate::cri::container::pod_cgroup(r).unwrap_or_default(),
            pod_overhead: r.pod_resources.overhead.as_ref().map(from_cri),
            pod_resources: r.pod_resources.resources.as_ref().map(from_cri),
            ..Default::default()
        }),
        pid: r.helper_pid.unwrap_or(0),
        ips: r.ips.clone(),
    }
}

/// What a container is besides its spec (a record, or one being created).
pub struct ContainerBase<'a> {
    /// Container id.
    pub id: &'a str,
    /// Its pod.
    pub sandbox_id: &'a str,
    /// Metadata name.
    pub name: &'a str,
    /// NRI state.
    pub state: nri::ContainerState,
    /// Labels.
    pub labels: &'a std::collections::BTreeMap<String, String>,
    /// Annotations (the CRI's; the spec's are a superset).
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

/// The NRI view of container `rec`.
pub fn container_of_record(rec: &ContainerRecord) -> nri::Container {
    let state = match rec.state {
        ContainerState::Created => nri::ContainerState::ContainerCreated,
        ContainerState::Running => nri::ContainerState::ContainerRunning,
        ContainerState::Exited => nri::ContainerState::ContainerStopped,
    };
    let mut c = container(
        &ContainerBase {
            id: &rec.id,
            sandbox_id: &rec.sandbox_id,
            name: &rec.name,
            state,
            labels: &rec.labels,
            annotations: &rec.annotations,
        },
        &rec.spec,
    );
    c.pid = rec.pid.unwrap_or(0);
    c.created_at = rec.created_at;
    c.started_at = rec.started_at;
    c.finished_at = rec.finished_at;
    c.exit_code = rec.exit_code;
    c.status_reason = rec.reason.clone();
    c.status_message = rec.message.clone();
    c
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The NRI view of a container from its base facts and OCI spec (JSON).
pub fn container(base: &ContainerBase<'_>, spec: &Value) -> nri::Container {
    let process = &spec["process"];
    let linux = &spec["linux"];
    let mut annotations: std::collections::HashMap<String, String> =
        base.annotations.clone().into_iter().collect();
    if let Some(a) = spec["annotations"].as_object() {
        for (k, v) in a {
            if let Some(v) = v.as_str() {
                annotations.insert(k.clone(), v.to_string());
            }
        }
    }
    nri::Container {
        id: base.id.to_string(),
        pod_sandbox_id: base.sandbox_id.to_string(),
        name: base.name.to_string(),
        state: base.state as i32,
        labels: base.labels.clone().into_iter().collect(),
        annotations,
        args: strings(&process["args"]),
        env: strings(&process["env"]),
        mounts: spec["mounts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| nri::Mount {
                        destination: m["destination"].as_str().unwrap_or_default().into(),
                        r#type: m["type"].as_str().unwrap_or_default().into(),
                        source: m["source"].as_str().unwrap_or_default().into(),
                        options: strings(&m["options"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        hooks: None,
        linux: Some(nri::LinuxContainer {
            namespaces: linux["namespaces"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| nri::LinuxNamespace {
                            r#type: n["type"].as_str().unwrap_or_default().into(),
                            path: n["path"].as_str().unwrap_or_default().into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            devices: Vec::new(),
            resources: Some(resources_of_spec(&linux["resources"])),
            oom_score_adj: process["oomScoreAdj"]
                .as_i64()
                .map(|value| nri::OptionalInt { value }),
            cgroups_path: linux["cgroupsPath"].as_str().unwrap_or_default().into(),
        }),
        pid: 0,
        rlimits: process["rlimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| nri::PosixRlimit {
                        r#type: r["type"].as_str().unwrap_or_default().into(),
                        hard: r["hard"].as_u64().unwrap_or(0),
                        soft: r["soft"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// An OCI `linux.resources` object as NRI resources.
pub fn resources_of_spec(r: &Value) -> nri::LinuxResources {
    let i64_of = |v: &Value| v.as_i64().map(|value| nri::OptionalInt64 { value });
    let u64_of = |v: &Value| v.as_u64().map(|value| nri::OptionalUInt64 { value });
    let mem = &r["memory"];
    let cpu = &r["cpu"];
    nri::LinuxResources {
        memory: mem.is_object().then(|| nri::LinuxMemory {
            limit: i64_of(&mem["limit"]),
            reservation: i64_of(&mem["reservation"]),
            swap: i64_of(&mem["swap"]),
            swappiness: u64_of(&mem["swappiness"]),
            ..Default::default()
        }),
        cpu: cpu.is_object().then(|| nri::LinuxCpu {
            shares: u64_of(&cpu["shares"]),
            quota: i64_of(&cpu["quota"]),
            period: u64_of(&cpu["period"]),
            cpus: cpu["cpus"].as_str().unwrap_or_default().into(),
            mems: cpu["mems"].as_str().unwrap_or_default().into(),
            ..Default::default()
        }),
        hugepage_limits: r["hugepageLimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| nri::HugepageLimit {
                        page_size: h["pageSize"].as_str().unwrap_or_default().into(),
                        limit: h["limit"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        unified: r["unified"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        pids: r["pids"]["limit"]
            .as_i64()
            .map(|limit| nri::LinuxPids { limit }),
        ..Default::default()
    }
}

/// CRI resources as NRI resources (pod overhead/resources, update requests).
pub fn from_cri(r: &cri::LinuxContainerResources) -> nri::LinuxResources {
    let nz_i = |v: i64| (v != 0).then_some(nri::OptionalInt64 { value: v });
    let nz_u = |v: i64| (v > 0).then_some(nri::OptionalUInt64 { value: v as u64 });
    nri::LinuxResources {
        memory: Some(nri::LinuxMemory {
            limit: nz_i(r.memory_limit_in_bytes),
            swap: nz_i(r.memory_swap_limit_in_bytes),
            ..Default::default()
        }),
        cpu: Some(nri::LinuxCpu {
            shares: nz_u(r.cpu_shares),
            quota: nz_i(r.cpu_quota),
            period: nz_u(r.cpu_period),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| nri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone(),
        ..Default::default()
    }
}

/// NRI resources merged over CRI resources: fields the plugin set win.
pub fn merge_into_cri(
    base: &cri::LinuxContainerResources,
    r: &nri::LinuxResources,
) -> cri::LinuxContainerResources {
    let mut out = base.clone();
    if let Some(m) = &r.memory {
        if let Some(v) = &m.limit {
            out.memory_limit_in_bytes = v.value;
        }
        if let Some(v) = &m.swap {
            out.memory_swap_limit_in_bytes = v.value;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(v) = &c.shares {
            out.cpu_shares = i64::try_from(v.value).unwrap_or(i64::MAX);
        }
        if let Some(v) = &c.quota {
            out.cpu_quota = v.value;
        }
        if let Some(v) = &c.period {
            out.cpu_period = i64::try_from(v.value).unwrap_or(i64::MAX);
        }
        if !c.cpus.is_empty() {
            out.cpuset_cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            out.cpuset_mems = c.mems.clone();
        }
    }
    if !r.hugepage_limits.is_empty() {
        out.hugepage_limits = r
            .hugepage_limits
            .iter()
            .map(|h| cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect();
    }
    for (k, v) in &r.unified {
        out.unified.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_resources_read_as_nri_resources() {
        let r = resources_of_spec(&json!({
            "memory": {"limit": 1048576},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "pids": {"limit": 42}
        }));
        let mem = r.memory.unwrap();
        assert_eq!(mem.limit.map(|v| v.value), Some(1048576));
        assert_eq!(mem.swap, None);
        let cpu = r.cpu.unwrap();
        assert_eq!(cpu.shares.map(|v| v.value), Some(512));
        assert_eq!(cpu.quota.map(|v| v.value), Some(50000));
        assert_eq!(cpu.cpus, "0-1");
        assert_eq!(r.pids.map(|p| p.limit), Some(42));
    }

    #[test]
    fn nri_resources_override_only_what_they_set() {
        let base = cri::LinuxContainerResources {
            cpu_shares: 2,
            memory_limit_in_bytes: 100,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let r = nri::LinuxResources {
            cpu: Some(nri::LinuxCpu {
                cpus: "1".into(),
                ..Default::default()
            }),
            memory: Some(nri::LinuxMemory {
                limit: Some(nri::OptionalInt64 { value: 200 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = merge_into_cri(&base, &r);
        assert_eq!(out.cpuset_cpus, "1");
        assert_eq!(out.memory_limit_in_bytes, 200);
        assert_eq!(out.cpu_shares, 2);
    }
}
