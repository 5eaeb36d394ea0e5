//! The benchmark peer: a private containerd with its own built-in CRI plugin
//! enabled (Debian's containerd 1.6 ships it), so figures of crid can be set
//! side by side with containerd's CRI in the same run. Own root, state,
//! socket, runc root, CNI conf dir and host-local data dir, all below one
//! directory; the pause image is a busybox `sleep` built by
//! [`crate::ImageBuilder`] and served by the test's local registry (plain
//! HTTP, via a `hosts.toml` under the CRI plugin's `config_path`).
//!
//! On drop it stops and removes every pod through CRI (so CNI DEL runs and
//! IPs are released), stops containerd, kills leftover shims and container
//! processes, detaches every mount below its directory, removes the pods'
//! cgroup parent everywhere and deletes its bridge.

use crate::images::{BuiltImage, ImageBuilder};
use crate::registry::free_port;
use crate::{crid::CriClients, mounts_under, remove_cgroup_everywhere, wait_for, BoxError};
use crid_proto::cri;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository and tag the pause image is pushed as.
pub const PAUSE_REPO: &str = "peer/pause";

/// What the peer needs from its test.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// `host:port` of a plain-HTTP registry holding the pause image
    /// ([`push_pause_image`]).
    pub registry: String,
    /// Linux bridge its CNI config creates (unique per test; <= 15 chars).
    pub bridge: String,
    /// IPv4 subnet of that bridge, e.g. `10.245.1.0/24` (unique per test).
    pub subnet: String,
    /// Cgroup under which the caller puts its pods (`cgroup_parent` values
    /// start with it); removed everywhere on drop. E.g. `/crid-bench-peer-<pid>`.
    pub cgroup_root: String,
}

/// Builds the pause image (busybox-static `sleep` as entrypoint; the CRI
/// plugin stops pods with SIGKILL, so no signal handling is needed) and
/// pushes it to `target` as `peer/pause:1`. Returns its reference.
pub fn push_pause_image(target: &crate::PushTarget) -> Result<(String, BuiltImage), BoxError> {
    let img = ImageBuilder::busybox()?
        .with_config(|c| {
            c.entrypoint = Some(vec!["/bin/sleep".into(), "2147483647".into()]);
            c.cmd = None;
        })
        .build()?;
    img.push(target, PAUSE_REPO, &["1"])?;
    Ok((format!("{}/{PAUSE_REPO}:1", target.host), img))
}

/// A running containerd with its CRI plugin; cleaned up on drop.
pub struct PrivateCriContainerd {
    dir: PathBuf,
    child: Option<Child>,
    opts: PeerOptions,
    /// The CNI network name in its conflist.
    pub network: String,
    /// Port of the CRI streaming server (Exec/Attach URLs).
    pub stream_port: u16,
}

impl PrivateCriContainerd {
    /// Starts it with everything below `dir`; returns once its CRI answers
    /// `Version`. The pause image must already be in `opts.registry`.
    pub async fn start(dir: &Path, opts: PeerOptions) -> Result<PrivateCriContainerd, BoxError> {
        std::fs::create_dir_all(dir)?;
        let network = format!("peer-{}", opts.bridge);
        let conf_dir = dir.join("cni/net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "bridge", "bridge": opts.bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": opts.subnet}]],
                      "dataDir": dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(
            conf_dir.join("10-peer.conflist"),
            serde_json::to_vec(&conf)?,
        )?;
        let hosts_dir = dir.join("certs.d").join(&opts.registry);
        std::fs::create_dir_all(&hosts_dir)?;
        std::fs::write(
            hosts_dir.join("hosts.toml"),
            format!(
                "server = \"http://{r}\"\n\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                r = opts.registry
            ),
        )?;
        let stream_port = free_port()?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir, &opts, stream_port))?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting containerd (is the package installed?): {e}"))?;
        let me = PrivateCriContainerd {
            dir: dir.to_path_buf(),
            child: Some(child),
            opts,
            network,
            stream_port,
        };
        let socket = me.socket();
        let up = wait_for(Duration::from_secs(30), || {
            let socket = socket.clone();
            async move {
                let mut c = crate::crid::connect(&socket).await.ok()?;
                c.runtime.version(cri::VersionRequest::default()).await.ok()
            }
        })
        .await;
        if up.is_none() {
            return Err(format!(
                "containerd's CRI did not answer within 30s; log:\n{}",
                me.log()
            )
            .into());
        }
        Ok(me)
    }

    /// The gRPC socket (containerd's API and CRI both).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// CRI clients on its socket.
    pub async fn clients(&self) -> Result<CriClients, BoxError> {
        crate::crid::connect(&self.socket()).await
    }

    /// containerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What containerd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Its options.
    pub fn options(&self) -> &PeerOptions {
        &self.opts
    }

    /// Pids of the `containerd-shim-runc-v2` processes serving this
    /// containerd (their command line names its socket).
    pub fn shim_pids(&self) -> Vec<u32> {
        shims_of(&self.socket())
    }

    /// Stops and removes every pod through CRI, stops containerd, then kills
    /// what is left and removes mounts, cgroups and the bridge. Returns what
    /// could not be cleaned (empty when all is gone). Idempotent.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut left = vec![];
        if self.child.is_some() {
            let socket = self.socket();
            // A thread of its own: this may run inside (or outside) a tokio
            // runtime, from Drop.
            let r = std::thread::spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), remove_all_pods(&socket))
                        .await
                        .map_err(|_| "removing pods timed out".to_string())?
                        .map_err(|e| e.to_string())
                })
            })
            .join()
            .unwrap_or_else(|_| Err("pod removal thread panicked".into()));
            if let Err(e) = r {
                left.push(format!("removing pods via CRI: {e}"));
            }
            if let Some(mut child) = self.child.take() {
                crate::crid::terminate(&mut child, Duration::from_secs(10));
            }
        }
        // Normally none: removed pods take their shims with them.
        for pid in shims_of(&self.socket()) {
            left.push(format!("shim {pid} still running; killed"));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let cg = self.opts.cgroup_root.trim_matches('/').to_string();
        if !cg.is_empty() {
            kill_cgroup_procs(&cg);
            let mut stuck = vec![];
            for _ in 0..100 {
                stuck = remove_cgroup_everywhere(&cg);
                if stuck.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            left.extend(
                stuck
                    .iter()
                    .map(|p| format!("cgroup {} not removed", p.display())),
            );
        }
        crate::unmount_all_under(&self.dir);
        left.extend(
            mounts_under(&self.dir)
                .iter()
                .map(|m| format!("mount {} not detached", m.display())),
        );
        let _ = Command::new("ip")
            .args(["link", "del", &self.opts.bridge])
            .stderr(Stdio::null())
            .status();
        left
    }

    /// IPs host-local has handed out and not released (one file per IP).
    pub fn ip_allocations(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("ipam").join(&self.network))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for PrivateCriContainerd {
    fn drop(&mut self) {
        for l in self.shutdown() {
            eprintln!("benchmark peer cleanup: {l}");
        }
    }
}

/// The config: CRI enabled, everything private below `dir`.
fn config_toml(dir: &Path, opts: &PeerOptions, stream_port: u16) -> String {
    let d = dir.display();
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[{cri}]
  sandbox_image = "{registry}/{PAUSE_REPO}:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  enable_tls_streaming = false
  # Root here lacks CAP_SYS_RESOURCE: clamp oom_score_adj like crid does.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  systemd_cgroup = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d}/runc"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni/net.d"
  max_conf_num = 1

[{cri}.registry]
  config_path = "{d}/certs.d"
"#,
        registry = opts.registry,
    )
}

/// Stops and removes every pod sandbox (and with it its containers).
async fn remove_all_pods(socket: &Path) -> Result<(), BoxError> {
    let mut c = crate::crid::connect(socket).await?;
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for p in pods {
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await?;
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await?;
    }
    Ok(())
}

/// Processes whose command line is a containerd shim naming `socket`.
pub fn shims_of(socket: &Path) -> Vec<u32> {
    let needle = socket.to_string_lossy().into_owned();
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("/usr/bin/containerd-shim") || cmd.starts_with("containerd-shim") {
            let args: Vec<&str> = cmd.split('\0').collect();
            if args.contains(&needle.as_str()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// SIGKILLs every process in the cgroup `rel` and below, in every hierarchy.
fn kill_cgroup_procs(rel: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = roots
        .filter_map(Result::ok)
        .map(|e| e.path().join(rel))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(rel));
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(e.path());
            }
        }
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
