//! Sandbox figures for docs/PERFORMANCE.md: RunPodSandbox latency p50/p90
//! over 50 pods, and the helper's idle RSS and PSS (smaps_rollup) with 20
//! pods running. Real containerd, crid, helpers and CNI bridge + host-local.
//!
//! Run as root: `CRID_BIN_DIR=<target>/release <target>/release/bench_sandbox`

use crid_e2e::{test_dir, CridProcess, PrivateContainerd};
use crid_proto::cri;
use std::time::{Duration, Instant};

/// kB fields of /proc/PID/smaps_rollup.
fn rollup(pid: u64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), crid_e2e::BoxError> {
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd")).await?;
    let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
    config.log.level = "info".into();
    config.cni.bin_dirs = vec!["/usr/lib/cni".into()];
    std::fs::create_dir_all(&config.cni.conf_dir)?;
    let bridge = "crid-bench";
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "crid-bench", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.99.0/24"}]],
                  "dataDir": dir.path().join("ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    std::fs::write(
        config.cni.conf_dir.join("10-bench.conflist"),
        serde_json::to_vec(&conf)?,
    )?;
    let crid = CridProcess::start(config).await?;
    let mut c = crid.clients().await?;

    let mut ids = Vec::new();
    let mut lat = Vec::new();
    let mut idle = None;
    for i in 0..50 {
        let cfg = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("bench-{i}"),
                uid: format!("uid-{i}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: format!("bench-{i}"),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let t = Instant::now();
        let id = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        lat.push(t.elapsed());
        ids.push(id);
        if ids.len() == 20 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut helpers = Vec::new();
            let mut reapers = Vec::new();
            for id in &ids {
                let r = c
                    .runtime
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose: true,
                    })
                    .await?
                    .into_inner();
                let info: serde_json::Value = serde_json::from_str(&r.info["info"])?;
                helpers.push(info["helperPid"].as_u64().unwrap_or(0));
                reapers.extend(info["reaperPid"].as_u64());
            }
            let avg = |pids: &[u64], f: &str| {
                pids.iter().map(|p| rollup(*p, f)).sum::<u64>() as f64 / pids.len().max(1) as f64
            };
            idle = Some((
                avg(&helpers, "Rss:"),
                avg(&helpers, "Pss:"),
                avg(&reapers, "Rss:"),
                avg(&reapers, "Pss:"),
            ));
        }
    }
    let mut sorted = lat.clone();
    sorted.sort();
    for id in &ids {
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
    }
    drop(crid);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .status();
    if let Some((rss, pss, rrss, rpss)) = idle {
        println!("helper idle with 20 pods: RSS {rss:.0} kB, PSS {pss:.0} kB (average per helper)");
        println!("pod PID-namespace init:   RSS {rrss:.0} kB, PSS {rpss:.0} kB (average per pod)");
    }
    println!(
        "RunPodSandbox over {} pods: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        sorted.len(),
        percentile(&sorted, 0.5).as_secs_f64() * 1e3,
        percentile(&sorted, 0.9).as_secs_f64() * 1e3,
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    Ok(())
}
