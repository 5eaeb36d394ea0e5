//! Log figures for docs/PERFORMANCE.md (issue 6), side by side in one run:
//! crid vs containerd 1.6's built-in CRI plugin (the benchmark peer).
//!
//! The same busybox image and command on both: `yes LINE | head -c BYTES`
//! (63-character lines + newline, BYTES = MIB MiB, then exit). Timed from
//! StartContainer until the container has exited and the CRI log file has
//! stopped growing (polled every 20 ms; the end is the last growth seen).
//! CPU (utime+stime from /proc/PID/stat, delta over the run) of the log
//! writer: crid's pod helper; for containerd the CRI plugin copies the
//! shim's FIFOs into the log inside the containerd daemon, so its writer is
//! the daemon (which does other work too, e.g. answering our status polls).
//! Both runtimes also pay the runc shim copying the container's pipe into
//! the FIFO; that is printed separately. Both logs are then parsed: every
//! line must be a well-formed CRI line (`<RFC3339Nano> stdout F LINE`), and
//! both must hold exactly BYTES/64 lines.
//!
//! Usage (as root): `bench_logs [MIB] [ROUNDS]` (defaults 256 2).

use crid_e2e::bench::{ratio, BenchWorld, Which};
use crid_e2e::workload::{self, cpu_seconds, unimplemented};
use crid_e2e::BoxError;
use crid_proto::cri;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";

struct Round {
    secs: f64,
    log_bytes: u64,
    writer_cpu: f64,
    shim_cpu: f64,
    /// crid's own daemon + its containerd (crid side only).
    daemons_cpu: Option<f64>,
}

fn main() -> Result<(), BoxError> {
    crid_e2e::bench::main_with(run)
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_seconds(*p)).sum()
}

/// Checks every line of a CRI log; returns the line count.
fn verify_log(path: &Path) -> Result<u64, BoxError> {
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut n = 0u64;
    for line in f.split(b'\n') {
        let line = line?;
        let s = std::str::from_utf8(&line)?;
        let mut parts = s.splitn(4, ' ');
        let (ts, stream, tag, content) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let ts_ok = ts.len() >= 20
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && (ts.ends_with('Z') || ts.contains('+') || ts[19..].contains('-'));
        if !ts_ok || stream != "stdout" || tag != "F" || content != LINE {
            return Err(format!("{}: line {} malformed: {s:?}", path.display(), n + 1).into());
        }
        n += 1;
    }
    Ok(n)
}

async fn one_round(
    world: &BenchWorld,
    w: Which,
    round: usize,
    bytes: u64,
) -> Result<(Round, u64), BoxError> {
    let mut c = world.clients(w);
    let name = format!("logs-{round}");
    let pod_cfg = world.pod_config(w, &name);
    let pod = workload::run_pod(&mut c, &pod_cfg).await?;
    let r = measure(world, w, &mut c, &pod, &pod_cfg, bytes).await;
    workload::remove_pod(&mut c, &pod).await?;
    r
}

async fn measure(
    world: &BenchWorld,
    w: Which,
    c: &mut crid_e2e::CriClients,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    bytes: u64,
) -> Result<(Round, u64), BoxError> {
    let cmd = format!("yes {LINE} | head -c {bytes}");
    let cfg = workload::container_config("writer", &world.image, &["sh", "-c", &cmd], "writer.log");
    let id = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cfg),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    let log = Path::new(&pod_cfg.log_directory).join("writer.log");
    let writer = world.log_writer_pid(w, pod).await?;
    let daemons: Vec<u32> = match w {
        Which::Crid => [world.crid.crid.pid(), world.crid.ctrd.pid()]
            .into_iter()
            .flatten()
            .collect(),
        Which::Peer => vec![],
    };
    let shims_before = world.shims(w);
    let (writer0, shim0, daemons0) = (
        cpu_seconds(writer).unwrap_or(0.0),
        cpu_of(&shims_before),
        cpu_of(&daemons),
    );
    let t0 = Instant::now();
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let shims = world.shims(w);
    // Shims started by StartContainer count from zero.
    let (mut size, mut last_change, mut exited) = (0u64, t0, None);
    loop {
        let now = Instant::now();
        let s = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if s != size {
            size = s;
            last_change = now;
        }
        if exited.is_none() {
            let st = workload::status(c, &id).await?;
            if st.state == cri::ContainerState::ContainerExited as i32 {
                if st.exit_code != 0 {
                    return Err(format!("writer exited {}: {}", st.exit_code, st.message).into());
                }
                exited = Some(now);
            }
        }
        if let Some(e) = exited {
            if now.duration_since(last_change) > Duration::from_millis(500) && size > 0 {
                let end = last_change.max(e);
                let round = Round {
                    secs: end.duration_since(t0).as_secs_f64(),
                    log_bytes: size,
                    writer_cpu: cpu_seconds(writer).unwrap_or(0.0) - writer0,
                    shim_cpu: cpu_of(&shims) - shim0,
                    daemons_cpu: (!daemons.is_empty()).then(|| cpu_of(&daemons) - daemons0),
                };
                let lines = verify_log(&log)?;
                return Ok((round, lines));
            }
        }
        if now.duration_since(t0) > Duration::from_secs(600) {
            return Err("writer did not finish within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run() -> Result<(), BoxError> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mib = *args.first().unwrap_or(&256);
    let rounds = *args.get(1).unwrap_or(&2) as usize;
    let bytes = mib * 1024 * 1024;
    let expected_lines = bytes / 64;
    let world = BenchWorld::start().await?;
    println!(
        "log writer: `yes {LINE} | head -c {bytes}` ({mib} MiB, {expected_lines} lines of 64 bytes), {rounds} round(s) per runtime, alternating"
    );
    let mut results: Vec<(Which, Vec<Round>, Option<String>)> =
        vec![(Which::Crid, vec![], None), (Which::Peer, vec![], None)];
    let mut failed = false;
    for round in 0..rounds {
        for (w, rs, skip) in results.iter_mut() {
            if skip.is_some() {
                continue;
            }
            match one_round(&world, *w, round, bytes).await {
                Ok((r, lines)) => {
                    let name = w.name();
                    println!(
                        "{name} round {}: {:.2} s, {:.0} MB/s input, log file {:.1} MB ({:.0} MB/s), {lines} well-formed CRI lines, writer CPU {:.2} s, shim CPU {:.2} s{}",
                        round + 1,
                        r.secs,
                        bytes as f64 / 1e6 / r.secs,
                        r.log_bytes as f64 / 1e6,
                        r.log_bytes as f64 / 1e6 / r.secs,
                        r.writer_cpu,
                        r.shim_cpu,
                        r.daemons_cpu.map_or(String::new(), |d| format!(", crid + its containerd CPU {d:.2} s")),
                    );
                    if lines != expected_lines {
                        println!("{name}: FAILED: {lines} lines, expected {expected_lines}");
                        failed = true;
                    }
                    rs.push(r);
                }
                Err(e) => match unimplemented(&e) {
                    Some(rpc) => *skip = Some(format!("unimplemented: {rpc}")),
                    None => {
                        failed = true;
                        *skip = Some(format!("FAILED: {e}"));
                    }
                },
            }
        }
    }
    let gb = bytes as f64 / 1e9;
    let mut mbps = vec![];
    let mut cpu = vec![];
    for (w, rs, skip) in &results {
        let name = w.name();
        if let Some(s) = skip {
            println!("{name}: {s}");
        }
        if rs.is_empty() {
            mbps.push(None);
            cpu.push(None);
            continue;
        }
        let k = rs.len() as f64;
        let secs = rs.iter().map(|r| r.secs).sum::<f64>() / k;
        let wcpu = rs.iter().map(|r| r.writer_cpu).sum::<f64>() / k;
        let scpu = rs.iter().map(|r| r.shim_cpu).sum::<f64>() / k;
        let writer = match w {
            Which::Crid => "pod helper",
            Which::Peer => "containerd daemon",
        };
        println!(
            "{name} (mean of {}): {:.0} MB/s input; log writer ({writer}) {:.2} CPU s per GB input; shim {:.2} CPU s per GB input",
            rs.len(),
            gb * 1e3 / secs,
            wcpu / gb,
            scpu / gb,
        );
        mbps.push(Some(gb * 1e3 / secs));
        cpu.push(Some(wcpu / gb));
    }
    println!(
        "ratio crid/containerd-cri: throughput {}, log writer CPU per GB {}",
        ratio(mbps[0], mbps[1]),
        ratio(cpu[0], cpu[1])
    );
    drop(world);
    if failed {
        return Err("a runtime failed; see above".into());
    }
    Ok(())
}
