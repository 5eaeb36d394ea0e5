//! Pod start figures for docs/PERFORMANCE.md (issue 5), side by side in one
//! run: crid vs containerd 1.6's built-in CRI plugin (the benchmark peer).
//! For each of N pods (default 30), alternating runtimes: RunPodSandbox
//! (own netns, CNI bridge + host-local + portmap) + CreateContainer +
//! StartContainer of busybox `sleep 3600`, timed until StartContainer
//! returns (then checked running via ContainerStatus, untimed). With all N
//! pods running: per-pod memory of what each runtime adds besides the
//! container (crid: its pod helper, which with the default handler
//! `io.containerd.crid.v1` is also the pod's shim, plus any containerd
//! shim; containerd: shim + pause), as PSS. Then every pod is stopped and
//! removed (also timed).
//!
//! Usage (as root): `bench_pods [PODS]`; uses the release `crid` and
//! `crid-pod-helper` beside it unless `CRID_BIN_DIR` says otherwise.
//! `CRID_TEST_RUNC_RUNTIME_TYPE=io.containerd.runc.v2` measures crid with
//! containerd's runc shim instead.

use crid_e2e::bench::{helper_pid, ms, ratio, sandbox_pid, BenchWorld, Which};
use crid_e2e::workload::{self, percentile, rollup_kb, unimplemented};
use crid_e2e::BoxError;
use crid_proto::cri;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Side {
    start: Vec<Duration>,
    run_pod: Vec<Duration>,
    remove: Vec<Duration>,
    pods: Vec<String>,
    unimplemented: Option<String>,
    error: Option<String>,
    /// (component, average PSS kB per pod, average RSS kB per pod)
    mem: Vec<(String, f64, f64)>,
}

fn main() -> Result<(), BoxError> {
    crid_e2e::bench::main_with(run)
}

async fn run() -> Result<(), BoxError> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 30,
    };
    let world = BenchWorld::start().await?;
    let image = world.image.clone();
    let mut sides = [
        (Which::Crid, Side::default()),
        (Which::Peer, Side::default()),
    ];
    for i in 0..n {
        for (w, side) in sides.iter_mut() {
            if side.unimplemented.is_some() || side.error.is_some() {
                continue;
            }
            let mut c = world.clients(*w);
            let name = format!("pod-{i}");
            let pod_cfg = world.pod_config(*w, &name);
            let cfg = workload::container_config("sleep", &image, &["sleep", "3600"], "sleep.log");
            match workload::start_pod(&mut c, &pod_cfg, &cfg).await {
                Ok(s) => {
                    side.start.push(s.total());
                    side.run_pod.push(s.run_pod);
                    let st = workload::status(&mut c, &s.container_id).await?;
                    if st.state != cri::ContainerState::ContainerRunning as i32 {
                        side.error = Some(format!(
                            "{name}: container not running after StartContainer (state {})",
                            st.state
                        ));
                    }
                    side.pods.push(s.pod_id);
                }
                Err(e) => match unimplemented(&e) {
                    Some(rpc) => side.unimplemented = Some(rpc),
                    None => side.error = Some(format!("{name}: {e}")),
                },
            }
        }
    }

    // Memory with all pods running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (w, side) in sides.iter_mut() {
        if side.pods.is_empty() {
            continue;
        }
        let mut c = world.clients(*w);
        let per_pod = side.pods.len() as f64;
        let shims = world.shims(*w);
        let sum = |pids: &[u32], f: &str| pids.iter().map(|p| rollup_kb(*p, f)).sum::<u64>() as f64;
        let mut other = vec![];
        let label = match w {
            Which::Crid => {
                for p in &side.pods {
                    other.push(helper_pid(&mut c, p).await?);
                }
                if shims.is_empty() {
                    "pod helper (the pod's shim)"
                } else {
                    "pod helper"
                }
            }
            Which::Peer => {
                for p in &side.pods {
                    other.push(sandbox_pid(&mut c, p).await?);
                }
                "pause (busybox sleep)"
            }
        };
        side.mem.push((
            format!("containerd shim ({} shims)", shims.len()),
            sum(&shims, "Pss:") / per_pod,
            sum(&shims, "Rss:") / per_pod,
        ));
        side.mem.push((
            label.to_string(),
            sum(&other, "Pss:") / per_pod,
            sum(&other, "Rss:") / per_pod,
        ));
    }

    for (w, side) in sides.iter_mut() {
        let mut c = world.clients(*w);
        for p in std::mem::take(&mut side.pods) {
            let t = Instant::now();
            workload::remove_pod(&mut c, &p).await?;
            side.remove.push(t.elapsed());
        }
    }

    println!("pods: {n} per runtime, alternating; busybox `sleep 3600`, own netns (CNI bridge + host-local + portmap)");
    let crid_type = world
        .crid
        .crid
        .config
        .runtime_handler("")
        .map_or("?", |(_, h)| h.runtime_type.as_str());
    println!("crid: default handler's runtime_type {crid_type}");
    let mut p50s = vec![];
    let mut p90s = vec![];
    for (w, side) in sides.iter_mut() {
        let name = w.name();
        if let Some(rpc) = &side.unimplemented {
            println!("{name}: unimplemented: {rpc} (no figures)");
            p50s.push(None);
            p90s.push(None);
            continue;
        }
        if let Some(e) = &side.error {
            println!("{name}: FAILED: {e}");
        }
        side.start.sort();
        side.run_pod.sort();
        side.remove.sort();
        let (p50, p90) = (percentile(&side.start, 0.5), percentile(&side.start, 0.9));
        println!(
            "{name}: pod start to container running over {} pods: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (RunPodSandbox alone p50 {:.1} ms)",
            side.start.len(),
            ms(p50),
            ms(p90),
            side.start.last().map_or(0.0, |d| ms(*d)),
            ms(percentile(&side.run_pod, 0.5)),
        );
        println!(
            "{name}: StopPodSandbox + RemovePodSandbox: p50 {:.1} ms, p90 {:.1} ms",
            ms(percentile(&side.remove, 0.5)),
            ms(percentile(&side.remove, 0.9)),
        );
        let mut total = 0.0;
        for (what, pss, rss) in &side.mem {
            println!("{name}: per pod, {what}: PSS {pss:.0} kB, RSS {rss:.0} kB");
            total += pss;
        }
        println!("{name}: per pod, runtime overhead PSS {total:.0} kB");
        let ok = side.error.is_none() && !side.start.is_empty();
        p50s.push(ok.then(|| ms(p50)));
        p90s.push(ok.then(|| ms(p90)));
    }
    println!(
        "ratio crid/containerd-cri: p50 {}, p90 {}",
        ratio(p50s[0], p50s[1]),
        ratio(p90s[0], p90s[1])
    );
    let failed = sides.iter().any(|(_, s)| s.error.is_some());
    drop(world);
    if failed {
        return Err("a runtime failed; see above".into());
    }
    Ok(())
}
