//! Pod lifecycles in a loop and what they leave behind: shared by the
//! `bench_soak` figures (docs/RELIABILITY.md) and the `soak` e2e test that
//! CI runs (issue 14).

use crate::net::TestNet;
use crate::pods::{sh, Node};
use crate::{mounts_under, pod_processes, workload, BoxError};

/// Open fds of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// VmRSS of a process in kB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pod cgroups (`crid/<id>`) of removed pods that still exist, any hierarchy.
fn cgroups_left(ids: &[String]) -> usize {
    let roots: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    ids.iter()
        .filter(|id| roots.iter().any(|r| r.join("crid").join(id).exists()))
        .count()
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// What removed pods left behind, by kind; all zero when nothing leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leftovers {
    /// Mounts under the node's dir (netns pins, rootfs, shm).
    pub mounts: usize,
    /// Pod cgroups of removed pods.
    pub cgroups: usize,
    /// host-local IPAM allocations.
    pub ipam: usize,
    /// Pod processes (helpers, shims, containers).
    pub procs: usize,
    /// containerd containers.
    pub containers: usize,
    /// containerd tasks.
    pub tasks: usize,
    /// Active snapshots.
    pub snapshots: usize,
    /// crid's sandbox records.
    pub sandbox_records: usize,
    /// crid's container records.
    pub container_records: usize,
}

/// Counts what `removed` pods left on node `n` (network `net`).
pub fn leftovers(n: &Node, net: &TestNet, removed: &[String]) -> Leftovers {
    let (ctrs, tasks) = n.ctrd_objects();
    let lines = |s: &str| s.lines().filter(|l| !l.trim().is_empty()).count();
    let state = &n.crid.config.state_dir;
    Leftovers {
        mounts: mounts_under(n.dir.path()).len(),
        cgroups: cgroups_left(removed),
        ipam: net.allocations().len(),
        procs: pod_processes(n.dir.path()).len(),
        containers: lines(&ctrs),
        tasks: lines(&tasks),
        snapshots: n
            .ctr(&["snapshots", "ls"])
            .lines()
            .filter(|l| l.trim_end().ends_with("Active"))
            .count(),
        sandbox_records: count_files(&state.join("sandboxes")),
        container_records: count_files(&state.join("containers")),
    }
}

/// One lifecycle: RunPodSandbox (own netns), CreateContainer +
/// StartContainer of busybox `sleep`, ExecSync `/bin/echo ok` (checked),
/// StopPodSandbox + RemovePodSandbox. Returns the pod id.
pub async fn cycle(n: &mut Node, name: &str) -> Result<String, BoxError> {
    let cfg = n.pod_config_with_netns(name);
    let pod = workload::run_pod(&mut n.c, &cfg).await?;
    let image = n.image.clone();
    let c =
        workload::create_and_start(&mut n.c, &pod, &cfg, &sh("c", &image, "sleep 1000")).await?;
    let e = workload::exec_sync(&mut n.c, &c, &["/bin/echo", "ok"], 10).await?;
    if e.exit_code != 0 || e.stdout != b"ok\n" {
        return Err(format!("exec answered {e:?}").into());
    }
    workload::remove_pod(&mut n.c, &pod).await?;
    Ok(pod)
}
