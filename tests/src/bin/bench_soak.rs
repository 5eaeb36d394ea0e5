//! Soak figures for docs/RELIABILITY.md (issue 14): N pod lifecycles, each
//! RunPodSandbox (own netns, CNI bridge + host-local + portmap),
//! CreateContainer + StartContainer (busybox `sleep`), ExecSync, StopPodSandbox,
//! RemovePodSandbox, against a private containerd. Prints crid's open fd
//! count and RSS at the start, every 100 cycles and at the end, and what is
//! left behind by the cycles so far: mounts under the test dir (netns pins,
//! rootfs, shm), pod cgroups, IPAM files, pod processes (helpers, shims),
//! containerd containers/tasks/active snapshots, crid records.
//!
//! Run as root: `CRID_BIN_DIR=<target>/release <target>/release/bench_soak [N]`
//! (default 1000).

use crid_e2e::images::ImageBuilder;
use crid_e2e::pods::{sh, Node};
use crid_e2e::{mounts_under, pod_processes, workload};
use std::time::Instant;

/// Subnet / bridge number of the soak's network (10.244.N.0/24).
const NET: u8 = 174;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), crid_e2e::BoxError> {
    crid_e2e::bench::default_bin_dir();
    let n_cycles: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let mut net = None;
    let mut n = Node::start_with_image(ImageBuilder::busybox()?, |c| {
        c.log.level = "info".into();
        net = Some(crid_e2e::net::TestNet::new(NET, c, None));
    })
    .await;
    let net = net.ok_or("no network")?;
    let pid = n.crid.pid().ok_or("crid not running")?;
    let dir = n.dir.path().to_path_buf();
    let state = n.crid.config.state_dir.clone();
    let mut removed: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let mut failures = 0usize;
    let report = |i: usize, removed: &[String], n: &Node, t: f64| {
        let (ctrs, tasks) = n.ctrd_objects();
        let active = n
            .ctr(&["snapshots", "ls"])
            .lines()
            .filter(|l| l.trim_end().ends_with("Active"))
            .count();
        println!(
            "cycle {i:>5}  {t:>7.1} s  crid fds {:>4}  rss {:>6} kB  | left: mounts {} cgroups {} ipam {} procs {} ctrd containers {} tasks {} active snapshots {} records {}+{}",
            fd_count(pid),
            rss_kb(pid),
            mounts_under(&dir).len(),
            cgroups_left(removed),
            net.allocations().len(),
            pod_processes(&dir).len(),
            ctrs.lines().filter(|l| !l.trim().is_empty()).count(),
            tasks.lines().filter(|l| !l.trim().is_empty()).count(),
            active,
            count_files(&state.join("sandboxes")),
            count_files(&state.join("containers")),
        );
    };
    report(0, &removed, &n, 0.0);
    for i in 1..=n_cycles {
        let name = format!("soak-{i}");
        let cfg = n.pod_config_with_netns(&name);
        let r: Result<String, crid_e2e::BoxError> = async {
            let pod = workload::run_pod(&mut n.c, &cfg).await?;
            let c =
                workload::create_and_start(&mut n.c, &pod, &cfg, &sh("c", &n.image, "sleep 1000"))
                    .await?;
            let e = workload::exec_sync(&mut n.c, &c, &["/bin/echo", "ok"], 10).await?;
            if e.exit_code != 0 || e.stdout != b"ok\n" {
                return Err(format!("exec answered {e:?}").into());
            }
            workload::remove_pod(&mut n.c, &pod).await?;
            Ok(pod)
        }
        .await;
        match r {
            Ok(pod) => removed.push(pod),
            Err(e) => {
                failures += 1;
                eprintln!("cycle {i}: {e}");
            }
        }
        if i % 100 == 0 || i == n_cycles {
            report(i, &removed, &n, t0.elapsed().as_secs_f64());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{n_cycles} cycles in {secs:.1} s ({:.2} s per cycle), {failures} failed",
        secs / n_cycles as f64
    );
    Ok(())
}
