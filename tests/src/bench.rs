//! Shared set-up of the side-by-side benchmarks (`bench_pods`, `bench_logs`,
//! `bench_exec`): one local registry with the busybox test image and the
//! peer's pause image, crid on its own private containerd, and the peer
//! (containerd's CRI plugin, [`PrivateCriContainerd`]); each with its own
//! CNI bridge, subnet and cgroup root. Benchmarks print figures; they are
//! not tests.

use crate::containerd_cri::{push_pause_image, shims_of};
use crate::images::ImageBuilder;
use crate::workload;
use crate::{
    test_dir, BoxError, CriClients, CridProcess, PeerOptions, PrivateContainerd,
    PrivateCriContainerd, Registry,
};
use crid_proto::cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which runtime a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// crid on a private containerd.
    Crid,
    /// containerd 1.6's built-in CRI plugin.
    Peer,
}

impl Which {
    /// Its name in output.
    pub fn name(self) -> &'static str {
        match self {
            Which::Crid => "crid",
            Which::Peer => "containerd-cri",
        }
    }
}

/// crid and what it runs on; pods removed on drop.
pub struct CridSide {
    /// crid.
    pub crid: CridProcess,
    /// Its private containerd (CRI disabled).
    pub ctrd: PrivateContainerd,
    /// CRI clients on crid.
    pub c: CriClients,
    bridge: String,
    cgroup_root: String,
    dir: PathBuf,
}

impl Drop for CridSide {
    fn drop(&mut self) {
        let socket = self.crid.config.socket.clone();
        let r = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut c = crate::crid::connect(&socket)
                    .await
                    .map_err(|e| e.to_string())?;
                let pods = c
                    .runtime
                    .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner()
                    .items;
                for p in pods {
                    workload::remove_pod(&mut c, &p.id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("panicked".into()));
        self.crid.stop();
        if let Err(e) = r {
            eprintln!("crid side cleanup: removing pods via CRI: {e}; killing leftovers");
            crate::kill_leftover_pods(&self.dir, &self.crid.config.state_dir);
        }
        self.ctrd.stop();
        for pid in shims_of(&self.ctrd.socket()) {
            eprintln!("crid side cleanup: shim {pid} left; killed");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let cg = self.cgroup_root.trim_matches('/').to_string();
        for _ in 0..100 {
            if crate::remove_cgroup_everywhere(&cg).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        crate::unmount_all_under(&self.dir);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Everything one benchmark run needs; dropped in field order.
pub struct BenchWorld {
    /// crid's side.
    pub crid: CridSide,
    /// The peer.
    pub peer: PrivateCriContainerd,
    /// CRI clients on the peer.
    pub peer_c: CriClients,
    /// The busybox test image both run.
    pub image: String,
    /// The registry serving it.
    pub reg: Registry,
    /// The run's directory (logs under `logs/`).
    pub dir: tempfile::TempDir,
}

impl BenchWorld {
    /// Sets both runtimes up and pulls the test image (and the peer's pause
    /// image) into each, so no pull is timed.
    pub async fn start() -> Result<BenchWorld, BoxError> {
        let pid = std::process::id();
        let reg = Registry::start(Default::default())?;
        let (pause, _) = push_pause_image(&reg.target())?;
        ImageBuilder::busybox()?
            .build()?
            .push(&reg.target(), "bench/busybox", &["1"])?;
        let image = format!("{}/bench/busybox:1", reg.host());
        let dir = test_dir();

        let peer = PrivateCriContainerd::start(
            &dir.path().join("peer"),
            PeerOptions {
                registry: reg.host(),
                bridge: "crid-pbench".into(),
                subnet: "10.245.2.0/24".into(),
                cgroup_root: format!("/crid-bench-peer-{pid}"),
            },
        )
        .await?;
        let mut peer_c = peer.clients().await?;
        workload::pull(&mut peer_c, &pause).await?;
        workload::pull(&mut peer_c, &image).await?;

        let crid_dir = dir.path().join("crid");
        let ctrd = PrivateContainerd::start(&crid_dir.join("containerd")).await?;
        let mut config = CridProcess::test_config(&crid_dir, &ctrd.socket());
        // CRID_BENCH_LOG (e.g. `crid=debug`) shows crid's phase timings in
        // its log (kept under the run's dir); the figures are taken at info.
        config.log.level = std::env::var("CRID_BENCH_LOG").unwrap_or_else(|_| "info".into());
        config.cni.bin_dirs = vec!["/usr/lib/cni".into()];
        std::fs::create_dir_all(&config.cni.conf_dir)?;
        let bridge = "crid-cbench".to_string();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "crid-cbench", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.3.0/24"}]],
                      "dataDir": crid_dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(
            config.cni.conf_dir.join("10-bench.conflist"),
            serde_json::to_vec(&conf)?,
        )?;
        let crid = CridProcess::start(config).await?;
        let mut c = crid.clients().await?;
        workload::pull(&mut c, &image).await?;
        let crid = CridSide {
            crid,
            ctrd,
            c,
            bridge,
            cgroup_root: format!("/crid-bench-crid-{pid}"),
            dir: crid_dir,
        };
        Ok(BenchWorld {
            crid,
            peer,
            peer_c,
            image,
            reg,
            dir,
        })
    }

    /// CRI clients of a runtime.
    pub fn clients(&self, w: Which) -> CriClients {
        match w {
            Which::Crid => self.crid.c.clone(),
            Which::Peer => self.peer_c.clone(),
        }
    }

    /// A pod config for runtime `w`: pod `name` with its own cgroup parent
    /// under the runtime's cgroup root and logs under the run's dir.
    pub fn pod_config(&self, w: Which, name: &str) -> cri::PodSandboxConfig {
        let root = match w {
            Which::Crid => self.crid.cgroup_root.clone(),
            Which::Peer => self.peer.options().cgroup_root.clone(),
        };
        workload::pod_config(name, &self.log_dir(w, name), &format!("{root}/{name}"))
    }

    /// Where pod `name`'s logs go.
    pub fn log_dir(&self, w: Which, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(w.name()).join(name)
    }

    /// The shim processes of a runtime's containerd.
    pub fn shims(&self, w: Which) -> Vec<u32> {
        match w {
            Which::Crid => shims_of(&self.crid.ctrd.socket()),
            Which::Peer => self.peer.shim_pids(),
        }
    }

    /// The process writing pod `pod_id`'s logs: crid's pod helper, or the
    /// peer's containerd daemon (its CRI plugin copies container output from
    /// the shim's FIFOs into the log file inside the daemon).
    pub async fn log_writer_pid(&self, w: Which, pod_id: &str) -> Result<u32, BoxError> {
        match w {
            Which::Crid => helper_pid(&mut self.clients(w), pod_id).await,
            Which::Peer => self.peer.pid().ok_or_else(|| "peer not running".into()),
        }
    }
}

/// crid's pod helper pid, from verbose PodSandboxStatus.
pub async fn helper_pid(c: &mut CriClients, pod_id: &str) -> Result<u32, BoxError> {
    let info = verbose_info(c, pod_id).await?;
    info["helperPid"]
        .as_u64()
        .map(|p| p as u32)
        .ok_or_else(|| format!("no helperPid in {info}").into())
}

/// The peer's pause (sandbox) process pid, from verbose PodSandboxStatus.
pub async fn sandbox_pid(c: &mut CriClients, pod_id: &str) -> Result<u32, BoxError> {
    let info = verbose_info(c, pod_id).await?;
    info["pid"]
        .as_u64()
        .map(|p| p as u32)
        .ok_or_else(|| format!("no pid in {info}").into())
}

async fn verbose_info(c: &mut CriClients, pod_id: &str) -> Result<serde_json::Value, BoxError> {
    let r = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let raw = r.info.get("info").ok_or("no verbose info")?;
    Ok(serde_json::from_str(raw)?)
}

/// Points `CRID_BIN_DIR` at the benchmark's own directory (the release
/// `crid` and `crid-pod-helper` built beside it) unless it is set. Call
/// first thing in `main`, before any thread exists.
pub fn default_bin_dir() {
    if std::env::var_os("CRID_BIN_DIR").is_none() {
        if let Some(d) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            std::env::set_var("CRID_BIN_DIR", d);
        }
    }
}

/// `a / b` for a ratio line, or `-` when either is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A benchmark's `main`: the release binaries beside it (see
/// [`default_bin_dir`]), then `run` on a multi-threaded runtime.
pub fn main_with<F>(run: impl FnOnce() -> F) -> Result<(), BoxError>
where
    F: std::future::Future<Output = Result<(), BoxError>>,
{
    default_bin_dir();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The benchmark's numeric arguments; `defaults` fills those not given.
pub fn numeric_args<const N: usize>(defaults: [usize; N]) -> Result<[usize; N], BoxError> {
    let mut out = defaults;
    for (i, a) in std::env::args().skip(1).enumerate() {
        let v: usize = a.parse()?;
        if let Some(slot) = out.get_mut(i) {
            *slot = v;
        }
    }
    Ok(out)
}
