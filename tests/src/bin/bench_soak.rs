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
use crid_e2e::pods::Node;
use crid_e2e::soak::{cycle, fd_count, leftovers, rss_kb};
use std::time::Instant;

/// Subnet / bridge number of the soak's network (10.244.N.0/24).
const NET: u8 = 174;

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
    let mut removed: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let mut failures = 0usize;
    let report = |i: usize, removed: &[String], n: &Node, t: f64| {
        let l = leftovers(n, &net, removed);
        println!(
            "cycle {i:>5}  {t:>7.1} s  crid fds {:>4}  rss {:>6} kB  | left: mounts {} cgroups {} ipam {} procs {} ctrd containers {} tasks {} active snapshots {} records {}+{}",
            fd_count(pid),
            rss_kb(pid),
            l.mounts,
            l.cgroups,
            l.ipam,
            l.procs,
            l.containers,
            l.tasks,
            l.snapshots,
            l.sandbox_records,
            l.container_records,
        );
    };
    report(0, &removed, &n, 0.0);
    for i in 1..=n_cycles {
        let r = cycle(&mut n, &format!("soak-{i}")).await;
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
