//! Exec figures for docs/PERFORMANCE.md (issue 7), side by side in one run:
//! crid vs containerd 1.6's built-in CRI plugin (the benchmark peer).
//!
//! In one pod per runtime (busybox `sleep 3600`):
//! - ExecSync latency p50/p90 over N runs (default 100) of `/bin/true`
//!   (a symlink to busybox: a real exec of a new process each time);
//! - exec stream throughput through `/bin/cat`: Exec RPC, then our SPDY/3.1
//!   client (`crid_e2e::stream_client`, remotecommand `v4.channel.k8s.io`)
//!   on the returned URL writes MIB MiB of random bytes on stdin while
//!   reading stdout, half-closes stdin and reads until cat's stdout ends;
//!   the echo must equal what was sent. Timed from the Exec RPC to the end
//!   of stdout; ROUNDS rounds (default 3), median.
//!
//! A runtime without ExecSync or Exec says so instead of a figure.
//!
//! Usage (as root): `bench_exec [N] [MIB] [ROUNDS]` (defaults 100 64 3).

use crid_e2e::bench::{ms, ratio, BenchWorld, Which};
use crid_e2e::images::random_bytes;
use crid_e2e::stream_client::SpdyClient;
use crid_e2e::workload::{self, percentile, unimplemented};
use crid_e2e::{BoxError, CriClients};
use crid_proto::cri;
use std::time::{Duration, Instant};

fn main() -> Result<(), BoxError> {
    crid_e2e::bench::main_with(run)
}

/// One streamed exec of cat; returns the time from Exec to the end of stdout.
async fn stream_cat(c: &mut CriClients, id: &str, payload: &[u8]) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let url = c
        .runtime
        .exec(cri::ExecRequest {
            container_id: id.into(),
            cmd: vec!["/bin/cat".into()],
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await?
        .into_inner()
        .url;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unexpected exec URL {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("no path in exec URL {url}"))?;
    let tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let spdy = SpdyClient::connect(tcp, &format!("/{path}"), &["v4.channel.k8s.io"]).await?;
    let mut err = spdy.open(&[("streamType", "error")]).await?;
    let stdin = spdy.open(&[("streamType", "stdin")]).await?;
    let mut stdout = spdy.open(&[("streamType", "stdout")]).await?;
    let write = async {
        stdin.write(payload).await?;
        stdin.close_write().await
    };
    let (w, echoed) = tokio::join!(write, stdout.read_to_end());
    w?;
    let echoed = echoed?;
    let elapsed = t.elapsed();
    let status = err.read_to_end().await.unwrap_or_default();
    let status = String::from_utf8_lossy(&status);
    if !(status.is_empty() || status.contains("Success")) {
        return Err(format!("cat's exec status: {status}").into());
    }
    if echoed.len() != payload.len() || echoed != payload {
        return Err(format!(
            "cat echoed {} bytes, {} sent (or different content)",
            echoed.len(),
            payload.len()
        )
        .into());
    }
    Ok(elapsed)
}

#[derive(Default)]
struct Side {
    sync: Vec<Duration>,
    sync_note: Option<String>,
    stream: Vec<Duration>,
    stream_note: Option<String>,
}

async fn run() -> Result<(), BoxError> {
    let [n, mib, rounds] = crid_e2e::bench::numeric_args([100, 64, 3])?;
    let payload = random_bytes(mib * 1024 * 1024, 7);
    let world = BenchWorld::start().await?;
    let mut failed = false;
    let mut sides = vec![];
    for w in [Which::Crid, Which::Peer] {
        let mut side = Side::default();
        let mut c = world.clients(w);
        let pod_cfg = world.pod_config(w, "exec");
        let cfg =
            workload::container_config("sleep", &world.image, &["sleep", "3600"], "sleep.log");
        let started = match workload::start_pod(&mut c, &pod_cfg, &cfg).await {
            Ok(s) => s,
            Err(e) => {
                let note = match unimplemented(&e) {
                    Some(rpc) => format!("unimplemented: {rpc} (cannot start the container)"),
                    None => {
                        failed = true;
                        format!("FAILED to start the pod: {e}")
                    }
                };
                side.sync_note = Some(note.clone());
                side.stream_note = Some(note);
                sides.push((w, side));
                continue;
            }
        };
        let id = started.container_id.clone();
        for _ in 0..n {
            let t = Instant::now();
            match workload::exec_sync(&mut c, &id, &["/bin/true"], 10).await {
                Ok(r) if r.exit_code == 0 => side.sync.push(t.elapsed()),
                Ok(r) => {
                    failed = true;
                    side.sync_note = Some(format!(
                        "FAILED: /bin/true exited {}: {}",
                        r.exit_code,
                        String::from_utf8_lossy(&r.stderr)
                    ));
                    break;
                }
                Err(e) => {
                    side.sync_note = Some(match unimplemented(&e) {
                        Some(rpc) => format!("ExecSync unimplemented ({rpc})"),
                        None => {
                            failed = true;
                            format!("ExecSync FAILED: {e}")
                        }
                    });
                    break;
                }
            }
        }
        for _ in 0..rounds {
            match stream_cat(&mut c, &id, &payload).await {
                Ok(d) => side.stream.push(d),
                Err(e) => {
                    side.stream_note = Some(match unimplemented(&e) {
                        Some(rpc) => format!("Exec streaming unimplemented ({rpc})"),
                        None => {
                            failed = true;
                            format!("Exec stream FAILED: {e}")
                        }
                    });
                    break;
                }
            }
        }
        workload::remove_pod(&mut c, &started.pod_id).await?;
        sides.push((w, side));
    }

    println!("ExecSync of /bin/true, {n} runs per runtime; exec stream through /bin/cat, {mib} MiB x {rounds} rounds (SPDY/3.1, v4.channel.k8s.io)");
    let (mut p50s, mut p90s, mut tputs) = (vec![], vec![], vec![]);
    for (w, side) in sides.iter_mut() {
        let name = w.name();
        side.sync.sort();
        side.stream.sort();
        if let Some(note) = &side.sync_note {
            println!("{name}: {note}");
        }
        if side.sync.len() == n && n > 0 {
            let (p50, p90) = (percentile(&side.sync, 0.5), percentile(&side.sync, 0.9));
            println!(
                "{name}: ExecSync latency p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                ms(p50),
                ms(p90),
                side.sync.last().map_or(0.0, |d| ms(*d))
            );
            p50s.push(Some(ms(p50)));
            p90s.push(Some(ms(p90)));
        } else {
            p50s.push(None);
            p90s.push(None);
        }
        if let Some(note) = &side.stream_note {
            println!("{name}: {note}");
        }
        if side.stream.len() == rounds && rounds > 0 {
            let med = side.stream[rounds / 2];
            let all: Vec<String> = side
                .stream
                .iter()
                .map(|d| format!("{:.0}", mib as f64 * 1.048576 / d.as_secs_f64()))
                .collect();
            let mbps = mib as f64 * 1.048576 / med.as_secs_f64();
            println!(
                "{name}: exec stream through cat: median {mbps:.0} MB/s (rounds, sorted by time: {} MB/s)",
                all.join(", ")
            );
            tputs.push(Some(mbps));
        } else {
            tputs.push(None);
        }
    }
    println!(
        "ratio crid/containerd-cri: ExecSync p50 {}, p90 {}; stream throughput {}",
        ratio(p50s[0], p50s[1]),
        ratio(p90s[0], p90s[1]),
        ratio(tputs[0], tputs[1])
    );
    drop(world);
    if failed {
        return Err("a runtime failed; see above".into());
    }
    Ok(())
}
