//! Image calls, ExecSync and crid's idle memory for docs/PERFORMANCE.md
//! (issue 19), side by side in one run: crid vs containerd 1.6's built-in
//! CRI plugin (the benchmark peer).
//!
//! Each sample alternates between the runtimes (crid, peer, crid, ...), so
//! both see the same machine load:
//! - ImageStatus and ListImages of the busybox test image (N each);
//! - PullImage then RemoveImage of a small 2-layer image (N rounds; each
//!   pull fetches and unpacks again: the removal before it had containerd's
//!   GC drop the content and snapshots);
//! - ExecSync `/bin/true` (a symlink to busybox: a new process is exec'd
//!   each time) in one running busybox `sleep` pod per runtime (N runs).
//!
//! Then crid's idle memory (VmRSS and PSS of the crid process, 2 s after
//! the last call) with 0 pods and with PODS pods running busybox `sleep`,
//! beside the memory of the containerd under it (CRI disabled) and of the
//! peer's containerd (CRI plugin inside).
//!
//! Usage (as root): `bench_cri [N] [PODS]` (defaults 100 30).
//! `CRID_BENCH_DUMP=DIR` copies crid's `/proc/PID/{status,smaps}` into DIR
//! at both idle points (`idle0-*`, `idleN-*`) and then waits for DIR/go to
//! exist before moving on, so crid can be inspected (gdb, heaptrack) while
//! it is idle.

use crid_e2e::bench::{ms, ratio, BenchWorld, Which};
use crid_e2e::images::ImageBuilder;
use crid_e2e::workload::{self, percentile, rollup_kb};
use crid_e2e::{BoxError, CriClients};
use crid_proto::cri;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() -> Result<(), BoxError> {
    crid_e2e::bench::main_with(run)
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// One timed call of `op` on runtime `w`.
async fn sample(
    c: &mut CriClients,
    op: &str,
    image: &str,
    small: &str,
    exec_in: &str,
) -> Result<Duration, BoxError> {
    let t = Instant::now();
    match op {
        "ImageStatus" => {
            let r = c
                .image
                .image_status(cri::ImageStatusRequest {
                    image: spec(image),
                    verbose: false,
                })
                .await?
                .into_inner();
            if r.image.is_none() {
                return Err(format!("ImageStatus: {image} not found").into());
            }
        }
        "ListImages" => {
            let n = c
                .image
                .list_images(cri::ListImagesRequest { filter: None })
                .await?
                .into_inner()
                .images
                .len();
            if n == 0 {
                return Err("ListImages: empty".into());
            }
        }
        "PullImage" => {
            workload::pull(c, small).await?;
        }
        "RemoveImage" => {
            c.image
                .remove_image(cri::RemoveImageRequest { image: spec(small) })
                .await?;
        }
        "ExecSync" => {
            let r = workload::exec_sync(c, exec_in, &["/bin/true"], 10).await?;
            if r.exit_code != 0 {
                return Err(format!(
                    "/bin/true exited {}: {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr)
                )
                .into());
            }
        }
        other => return Err(format!("unknown op {other}").into()),
    }
    Ok(t.elapsed())
}

fn mem_line(what: &str, pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!(
            "{what}: RSS {:.1} MiB, PSS {:.1} MiB",
            crid_e2e::soak::rss_kb(p) as f64 / 1024.0,
            rollup_kb(p, "Pss:") as f64 / 1024.0
        ),
        None => format!("{what}: not running"),
    }
}

/// With `CRID_BENCH_DUMP=DIR`: crid's status and smaps into DIR, then a
/// wait for DIR/go (removed again) so crid can be inspected while idle.
async fn dump_and_wait(pid: Option<u32>, tag: &str) -> Result<(), BoxError> {
    let (Some(dir), Some(pid)) = (std::env::var_os("CRID_BENCH_DUMP"), pid) else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    for f in ["status", "smaps"] {
        std::fs::copy(format!("/proc/{pid}/{f}"), dir.join(format!("{tag}-{f}")))?;
    }
    let go = dir.join("go");
    eprintln!(
        "crid (pid {pid}) idle at {tag}; touch {} to go on",
        go.display()
    );
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(&go)?;
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let [n, pods] = crid_e2e::bench::numeric_args([100, 30])?;
    let world = BenchWorld::start().await?;
    let small_img = ImageBuilder::new()
        .random_layer("a", 64 << 10, 1901)
        .random_layer("b", 64 << 10, 1902)
        .build()?;
    small_img.push(&world.reg.target(), "bench/small", &["1"])?;
    let small = format!("{}/bench/small:1", world.reg.host());
    let image = world.image.clone();
    let runtimes = [Which::Crid, Which::Peer];

    // One exec pod per runtime, started before any figure is taken.
    let mut exec_ids = BTreeMap::new();
    let mut exec_pods = BTreeMap::new();
    for w in runtimes {
        let mut c = world.clients(w);
        let pod_cfg = world.pod_config(w, "execsync");
        let cfg = workload::container_config("sleep", &image, &["sleep", "3600"], "sleep.log");
        let s = workload::start_pod(&mut c, &pod_cfg, &cfg).await?;
        exec_ids.insert(w.name(), s.container_id);
        exec_pods.insert(w.name(), s.pod_id);
    }

    let ops = [
        "ImageStatus",
        "ListImages",
        "PullImage",
        "RemoveImage",
        "ExecSync",
    ];
    let mut times: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    // Warm-up: one of each (connections, first-time paths), not counted.
    for w in runtimes {
        let mut c = world.clients(w);
        for op in ops {
            sample(&mut c, op, &image, &small, &exec_ids[w.name()]).await?;
        }
    }
    for group in [&ops[0..1], &ops[1..2], &ops[2..4], &ops[4..5]] {
        for _ in 0..n {
            for w in runtimes {
                let mut c = world.clients(w);
                for op in group {
                    let d = sample(&mut c, op, &image, &small, &exec_ids[w.name()])
                        .await
                        .map_err(|e| format!("{}: {op}: {e}", w.name()))?;
                    times.entry((op, w.name())).or_default().push(d);
                }
            }
        }
    }

    // Idle memory: crid with only the exec pod removed, then with PODS pods.
    for w in runtimes {
        workload::remove_pod(&mut world.clients(w), &exec_pods[w.name()]).await?;
    }
    let crid_pid = world.crid.crid.pid();
    let ctrd_pid = world.crid.ctrd.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle0 = (
        mem_line("crid, 0 pods", crid_pid),
        mem_line("crid's containerd (no CRI), 0 pods", ctrd_pid),
        mem_line("containerd with CRI plugin, 0 pods", world.peer.pid()),
    );
    dump_and_wait(crid_pid, "idle0").await?;
    let mut c = world.clients(Which::Crid);
    let cfg = workload::container_config("sleep", &image, &["sleep", "3600"], "sleep.log");
    for i in 0..pods {
        let pod_cfg = world.pod_config(Which::Crid, &format!("idle-{i}"));
        workload::start_pod(&mut c, &pod_cfg, &cfg).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_n = (
        mem_line(&format!("crid, {pods} pods"), crid_pid),
        mem_line(
            &format!("crid's containerd (no CRI), {pods} pods"),
            ctrd_pid,
        ),
    );
    dump_and_wait(crid_pid, "idleN").await?;

    println!("{n} samples per call and runtime, alternating crid / containerd-cri; PullImage: {small} (2 layers of 64 KiB random, gzip), removed after each pull");
    for op in ops {
        let mut p50 = vec![];
        for w in runtimes {
            let v = times.entry((op, w.name())).or_default();
            v.sort();
            let (a, b) = (percentile(v, 0.5), percentile(v, 0.9));
            println!(
                "{}: {op} p50 {:.2} ms, p90 {:.2} ms",
                w.name(),
                ms(a),
                ms(b)
            );
            p50.push(Some(ms(a)));
        }
        println!(
            "ratio crid/containerd-cri: {op} p50 {}",
            ratio(p50[0], p50[1])
        );
    }
    println!("{}\n{}\n{}", idle0.0, idle0.1, idle0.2);
    println!("{}\n{}", idle_n.0, idle_n.1);
    if std::env::var_os("CRID_BENCH_LOG").is_some() {
        // crid's phase timings (debug lines), for finding where the time goes.
        for l in world
            .crid
            .crid
            .log()
            .lines()
            .filter(|l| l.contains("timings"))
        {
            println!("{l}");
        }
    }
    Ok(())
}
