//! Image-pull benchmark: a multi-layer image of random content pulled from a
//! private registry by crid (CRI PullImage) and, in the same run against the
//! same private containerd, by containerd's own client
//! (`ctr images pull --plain-http`), with all content and snapshots removed
//! between pulls. Prints each time, the medians, their ratio and crid's peak
//! RSS. Not a test: run it by hand (see docs/PERFORMANCE.md).
//!
//! Usage: bench_pull [LAYERS] [TOTAL_MIB] [ROUNDS]   (defaults 8 200 3)

use crid_e2e::images::ImageBuilder;
use crid_e2e::{test_dir, CridProcess, PrivateContainerd, Registry, RegistryOptions};
use crid_proto::cri;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

type BoxError = crid_e2e::BoxError;

fn ctr(socket: &Path, args: &[&str]) -> Result<String, BoxError> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "crid"])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `VmHWM` / `VmRSS` of a process, in KiB.
fn proc_mem(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Removes every image and waits until content and snapshots are gone.
fn clean(socket: &Path) -> Result<(), BoxError> {
    let names = ctr(socket, &["images", "ls", "-q"])?;
    for n in names.lines().filter(|l| !l.is_empty()) {
        ctr(socket, &["images", "rm", "--sync", n])?;
    }
    for _ in 0..100 {
        let content = ctr(socket, &["content", "ls", "-q"])?;
        let snaps = ctr(socket, &["snapshots", "ls"])?;
        if content.trim().is_empty() && snaps.lines().count() <= 1 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("content or snapshots left after removing all images".into())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let layers = *args.first().unwrap_or(&8) as usize;
    let total_mib = *args.get(1).unwrap_or(&200) as usize;
    let rounds = *args.get(2).unwrap_or(&3) as usize;
    let layer_size = total_mib * 1024 * 1024 / layers;

    let reg = Registry::start(RegistryOptions::default())?;
    let mut b = ImageBuilder::new();
    for i in 0..layers {
        b = b.random_layer(&format!("layer{i}.bin"), layer_size, 1000 + i as u64);
    }
    let img = b.build()?;
    img.push(&reg.target(), "bench/random", &["1"])?;
    let name = format!("{}/bench/random:1", reg.host());
    let compressed: usize = img.layers.iter().map(|l| l.data.len()).sum();
    println!(
        "image {name}: {layers} layers, {:.1} MiB compressed",
        compressed as f64 / 1048576.0
    );

    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd")).await?;
    let sock = ctrd.socket();
    let mut config = CridProcess::test_config(dir.path(), &sock);
    config.log.level = "info".into();
    config.registry.config_path = dir.path().join("certs.d");
    let crid = CridProcess::start(config).await?;
    let pid = crid.pid().ok_or("crid has no pid")?;
    let mut client = crid.clients().await?.image;
    let rss_before = proc_mem(pid, "VmRSS:");

    let (mut t_crid, mut t_ctr) = (vec![], vec![]);
    for round in 0..rounds {
        clean(&sock)?;
        let start = Instant::now();
        let id = client
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image_ref;
        let d = start.elapsed();
        if id != img.id() {
            return Err(format!("crid pulled {id}, expected {}", img.id()).into());
        }
        t_crid.push(d);

        clean(&sock)?;
        let start = Instant::now();
        ctr(&sock, &["images", "pull", "--plain-http", &name])?;
        let d2 = start.elapsed();
        t_ctr.push(d2);
        println!(
            "round {}: crid {:.2}s  ctr {:.2}s",
            round + 1,
            d.as_secs_f64(),
            d2.as_secs_f64()
        );
    }
    let peak = proc_mem(pid, "VmHWM:");
    clean(&sock)?;
    let (mc, mt) = (median(&mut t_crid), median(&mut t_ctr));
    println!(
        "median: crid {:.2}s ({:.0} MiB/s)  ctr {:.2}s ({:.0} MiB/s)  crid/ctr = {:.2}",
        mc.as_secs_f64(),
        compressed as f64 / 1048576.0 / mc.as_secs_f64(),
        mt.as_secs_f64(),
        compressed as f64 / 1048576.0 / mt.as_secs_f64(),
        mc.as_secs_f64() / mt.as_secs_f64()
    );
    println!(
        "crid RSS: {} MiB before pulls, peak {} MiB (VmHWM over the run)",
        rss_before / 1024,
        peak / 1024
    );
    Ok(())
}
