//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats:
//! what the kubelet's CRI stats provider polls for the summary API
//! (`kubectl top`, eviction). Figures come from the cgroups
//! ([`crate::stats`]), the pod's network namespace (through its helper's
//! `/proc/<pid>/net/dev`) and containerd's snapshot usage.

use super::Crid;
use crate::cgroups::{self, RealCgroupFs};
use crate::container::record::{ContainerRecord, ContainerState};
use crate::error::{Error, Result};
use crate::image::session::{cerr, Session};
use crate::sandbox::record::SandboxRecord;
use crate::stats::{self, CgroupStats};
use crid_proto::containerd::services::v1::snapshots::snapshots_client::SnapshotsClient;
use crid_proto::containerd::services::v1::snapshots::UsageRequest;
use crid_proto::cri;
use std::collections::HashMap;
use std::sync::Mutex;

/// The previous CPU sample per cgroup, for `usage_nano_cores`.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Records `(ts, usage)` for `key`; returns the rate since the last sample.
    fn rate(&self, key: &str, ts: i64, usage: u64) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let prev = m.insert(key.to_string(), (ts, usage));
        stats::nano_cores(prev?, (ts, usage))
    }

    /// Forgets samples of cgroups not in `live`.
    fn retain(&self, live: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|k, _| live.contains(k));
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn u(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

/// Facts read once per RPC.
pub struct Ctx {
    /// The cgroup hierarchies.
    pub hierarchies: Vec<cgroups::Hierarchy>,
    /// The sample time, ns since the epoch.
    pub ts: i64,
    /// The writable layers' filesystem (ImageFsInfo's identifier).
    pub fs_mountpoint: String,
}

/// Reads the facts every stats call needs.
pub async fn ctx(crid: &Crid) -> Result<Ctx> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Internal(format!("reading mountinfo: {e}")))?;
    // The writable layers live on the snapshotter's filesystem: the same
    // identifier ImageFsInfo reports, so the kubelet can match them.
    let fs_mountpoint =
        crate::image::fsinfo::snapshotter_root(crid.images.containerd(), crid.images.snapshotter())
            .await
            .map(|p| p.display().to_string())
            .unwrap_or_default();
    Ok(Ctx {
        hierarchies: cgroups::hierarchies(&mountinfo),
        ts: now_ns(),
        fs_mountpoint,
    })
}

fn cpu(crid: &Crid, key: &str, ts: i64, s: &CgroupStats) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: u(s.cpu_ns),
        usage_nano_cores: u(s.cpu_ns.and_then(|c| crid.cpu_samples.rate(key, ts, c))),
        psi: psi(s.psi.cpu.as_ref()),
    }
}

fn psi(p: Option<&stats::Pressure>) -> Option<cri::PsiStats> {
    let line = |l: &stats::PressureLine| cri::PsiData {
        total: l.total,
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    p.map(|p| cri::PsiStats {
        full: Some(line(&p.full)),
        some: Some(line(&p.some)),
    })
}

fn swap(ts: i64, s: &CgroupStats) -> Option<cri::SwapUsage> {
    s.swap_usage.map(|used| cri::SwapUsage {
        timestamp: ts,
        swap_available_bytes: u(s.swap_available()),
        swap_usage_bytes: u(Some(used)),
    })
}

fn io(ts: i64, s: &CgroupStats) -> Option<cri::IoUsage> {
    s.psi.io.as_ref().map(|p| cri::IoUsage {
        timestamp: ts,
        psi: psi(Some(p)),
    })
}

fn memory(ts: i64, s: &CgroupStats) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u(s.working_set),
        available_bytes: u(s.available()),
        usage_bytes: u(s.memory_usage),
        rss_bytes: u(s.rss),
        page_faults: u(s.page_faults),
        major_page_faults: u(s.major_page_faults),
        psi: psi(s.psi.memory.as_ref()),
    }
}

/// The container's cgroup dir relative to the cgroup mounts: its OCI
/// spec's `cgroupsPath`, turned into the scope's dir when it is runc's
/// systemd `slice:prefix:name`.
pub fn container_cgroup(r: &ContainerRecord) -> Option<String> {
    let path = r.spec.pointer("/linux/cgroupsPath")?.as_str()?;
    cgroup_dir_of(path)
}

/// A spec `cgroupsPath` as a dir relative to the cgroup mounts (None: not
/// one crid can read: a systemd path that does not parse).
fn cgroup_dir_of(cgroups_path: &str) -> Option<String> {
    if cgroups_path.starts_with('/') {
        return Some(cgroups_path.to_string());
    }
    crate::systemd_cgroups::cgroupfs_path(cgroups_path).ok()
}

async fn container_stats(crid: &Crid, c: &Ctx, r: &ContainerRecord) -> Result<cri::ContainerStats> {
    let cg = container_cgroup(r).unwrap_or_default();
    let s = stats::read(&RealCgroupFs, &c.hierarchies, &cg);
    let writable_layer = writable_layer(crid, c, r).await?;
    Ok(cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: r.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: r.name.clone(),
                attempt: r.attempt,
            }),
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cpu(crid, &cg, c.ts, &s)),
        memory: Some(memory(c.ts, &s)),
        writable_layer,
        swap: swap(c.ts, &s),
        io: io(c.ts, &s),
    })
}

/// The container's writable layer usage (containerd's snapshot usage);
/// None once the snapshot is gone.
pub async fn writable_layer(
    crid: &Crid,
    c: &Ctx,
    r: &ContainerRecord,
) -> Result<Option<cri::FilesystemUsage>> {
    let usage = SnapshotsClient::new(crid.containerd.channel())
        .usage(Session::plain(&crid.containerd).req(UsageRequest {
            snapshotter: r.snapshotter.clone(),
            key: r.snapshot_key.clone(),
        }))
        .await;
    match usage {
        Ok(resp) => {
            let usage = resp.into_inner();
            Ok(Some(cri::FilesystemUsage {
                timestamp: c.ts,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: c.fs_mountpoint.clone(),
                }),
                used_bytes: u(Some(usage.size.max(0) as u64)),
                inodes_used: u(Some(usage.inodes.max(0) as u64)),
            }))
        }
        Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
        Err(st) => Err(cerr("snapshots.usage")(st)),
    }
}

/// `ContainerStats`: unknown → NotFound; a container not running has no
/// cgroup, so its figures are empty.
pub async fn container(
    crid: &Crid,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse> {
    let r = crid
        .containers
        .get(&req.container_id)?
        .ok_or_else(|| Error::NotFound(format!("container {} not found", req.container_id)))?;
    tracing::Span::current().record("container", r.id.as_str());
    let c = ctx(crid).await?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(container_stats(crid, &c, &r).await?),
    })
}

fn container_matches(f: &cri::ContainerStatsFilter, r: &ContainerRecord) -> bool {
    (f.id.is_empty() || r.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
        && f.label_selector
            .iter()
            .all(|(k, v)| r.labels.get(k) == Some(v))
}

/// `ListContainerStats`: the running containers that pass the filter.
pub async fn list_containers(
    crid: &Crid,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let c = ctx(crid).await?;
    let mut out = Vec::new();
    for r in crid.containers.all() {
        if r.state == ContainerState::Running && container_matches(&f, &r) {
            out.push(container_stats(crid, &c, &r).await?);
        }
    }
    forget_gone(crid);
    Ok(cri::ListContainerStatsResponse { stats: out })
}

/// Drops CPU samples of cgroups that no longer belong to a running object.
fn forget_gone(crid: &Crid) {
    let mut live: Vec<String> = crid
        .containers
        .all()
        .iter()
        .filter(|r| r.state == ContainerState::Running)
        .filter_map(container_cgroup)
        .collect();
    live.extend(
        crid.sandboxes
            .all()
            .iter()
            .filter(|s| s.is_ready())
            .filter_map(|s| super::container::pod_cgroup(s).ok()),
    );
    crid.cpu_samples.retain(&live);
}

async fn pod_stats(crid: &Crid, c: &Ctx, sb: &SandboxRecord) -> Result<cri::PodSandboxStats> {
    let cg = super::container::pod_cgroup(sb)?;
    let s = stats::read(&RealCgroupFs, &c.hierarchies, &cg);
    let network = pod_interfaces(sb).map(|all| {
        let ifs: Vec<cri::NetworkInterfaceUsage> = all
            .into_iter()
            .map(|i| cri::NetworkInterfaceUsage {
                name: i.name,
                rx_bytes: u(Some(i.rx_bytes)),
                rx_errors: u(Some(i.rx_errors)),
                tx_bytes: u(Some(i.tx_bytes)),
                tx_errors: u(Some(i.tx_errors)),
            })
            .collect();
        cri::NetworkUsage {
            timestamp: c.ts,
            default_interface: ifs
                .iter()
                .find(|i| i.name == "eth0")
                .or(ifs.first())
                .cloned(),
            interfaces: ifs,
        }
    });
    let mut containers = Vec::new();
    for r in crid.containers.of_sandbox(&sb.id) {
        if r.state == ContainerState::Running {
            containers.push(container_stats(crid, c, &r).await?);
        }
    }
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sb.id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: sb.name.clone(),
                uid: sb.uid.clone(),
                namespace: sb.namespace.clone(),
                attempt: sb.attempt,
            }),
            labels: sb.labels.clone().into_iter().collect(),
            annotations: sb.annotations.clone().into_iter().collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu(crid, &cg, c.ts, &s)),
            memory: Some(memory(c.ts, &s)),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: c.ts,
                process_count: u(s.pids),
            }),
            containers,
            io: io(c.ts, &s),
        }),
        windows: None,
    })
}

/// The interfaces of the pod's own network namespace (its helper lives
/// there); None for a host-network pod or without a helper.
pub fn pod_interfaces(sb: &SandboxRecord) -> Option<Vec<stats::InterfaceStats>> {
    let pid = sb.helper_pid.filter(|_| sb.own_namespaces().net)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(stats::parse_net_dev(&text))
}

/// `PodSandboxStats`: unknown → NotFound.
pub async fn pod(
    crid: &Crid,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse> {
    let sb = super::container::sandbox_of(crid, &req.pod_sandbox_id).await?;
    tracing::Span::current().record("pod", sb.id.as_str());
    let c = ctx(crid).await?;
    Ok(cri::PodSandboxStatsResponse {
        stats: Some(pod_stats(crid, &c, &sb).await?),
    })
}

/// `ListPodSandboxStats`: the ready pods that pass the filter.
pub async fn list_pods(
    crid: &Crid,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let c = ctx(crid).await?;
    let mut out = Vec::new();
    for sb in crid.sandboxes.all() {
        let pass = sb.is_ready()
            && (f.id.is_empty() || sb.id.starts_with(&f.id))
            && f.label_selector
                .iter()
                .all(|(k, v)| sb.labels.get(k) == Some(v));
        if pass {
            out.push(pod_stats(crid, &c, &sb).await?);
        }
    }
    forget_gone(crid);
    Ok(cri::ListPodSandboxStatsResponse { stats: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_cgroups_paths_become_cgroup_dirs() {
        // cgroupfs driver: the path as runc uses it.
        assert_eq!(
            cgroup_dir_of("/kubepods/besteffort/pod1/c1").as_deref(),
            Some("/kubepods/besteffort/pod1/c1")
        );
        // systemd driver: the scope runc makes in the pod's slice.
        assert_eq!(
            cgroup_dir_of("kubepods-besteffort-pod1.slice:crid:c1").as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crid-c1.scope")
        );
        assert_eq!(cgroup_dir_of("not:a:valid:path"), None);
    }
}
