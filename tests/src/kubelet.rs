//! A real kubelet on crid: the kubelet binary is given (built elsewhere from
//! the kubernetes source; nothing here builds it), run standalone (no API
//! server) with static pods, `containerRuntimeEndpoint` on a private crid,
//! the cgroupfs driver and the evented PLEG feature gate on, every port on
//! 127.0.0.1. What it checks is what an operator would look at: the pods'
//! state and restart counts on the kubelet's `/pods`, container logs through
//! `/containerLogs`, CPU and memory on `/stats/summary` and
//! `/metrics/cadvisor`, restarts seen through crid's container events, and
//! all of it again after crid restarts under the running pods.
//!
//! The kubelet runs in a private mount namespace where the six kernel
//! tunables it insists on (`vm.overcommit_memory`, `kernel.panic`, ...)
//! read as the values it wants (files bind-mounted over /proc/sys), with
//! `protectKernelDefaults: true`: it never writes the host's sysctls, which
//! on a shared test machine must stay as they are. Its static pods use no
//! volume the kubelet would mount (those mounts would stay in its namespace).

use crate::net::TestNet;
use crate::registry::free_port;
use crate::{test_dir, BoxError, CridProcess, ImageBuilder, PrivateContainerd, Registry};
use crid_proto::cri;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CNI network number (bridge `crid-t193`, 10.244.193.0/24) of the
/// node; no other test uses it (two tests on one number share a bridge and
/// hand out the same addresses: probes then reach the other test's pods).
const NET: u8 = 193;

/// The node name (`--hostname-override`); static pods are named `<pod>-<node>`.
pub const NODE: &str = "crid-kubelet";

/// The kernel tunables the kubelet requires (its `setupKernelTunables`),
/// as /proc/sys paths and the values it wants.
pub const KERNEL_TUNABLES: [(&str, i64); 6] = [
    ("vm/overcommit_memory", 1),
    ("vm/panic_on_oom", 0),
    ("kernel/panic", 10),
    ("kernel/panic_on_oops", 1),
    ("kernel/keys/root_maxkeys", 1_000_000),
    ("kernel/keys/root_maxbytes", 25_000_000),
];

/// Host paths a kubelet writes whatever its root dir (the device plugin
/// socket under /var/lib/kubelet, the flexvolume dir); the check leaves none
/// it did not find.
pub const KUBELET_HOST_PATHS: [&str; 4] = [
    "/var/lib/kubelet",
    "/usr/libexec/kubernetes",
    "/var/log/pods",
    "/etc/kubernetes",
];

/// The hard-wired kubelet dir whose contents the kubelet's mount namespace
/// redirects to the test's dir.
const VAR_LIB_KUBELET: &str = "/var/lib/kubelet";

/// How to run the check.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The kubelet binary.
    pub kubelet: PathBuf,
    /// Where the kubelet's, crid's and containerd's logs are kept.
    pub out_dir: PathBuf,
    /// Feature gates set besides `EventedPLEG=true` (e.g.
    /// `PodAndContainerStatsFromCRI=true`: stats and `/metrics/cadvisor`
    /// from crid's CRI stats and metrics instead of cAdvisor).
    pub feature_gates: Vec<(String, bool)>,
}

/// Parses `A=true,B=false` (the kubelet's `--feature-gates` syntax).
pub fn parse_feature_gates(text: &str) -> Result<Vec<(String, bool)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            let (name, value) = g
                .split_once('=')
                .ok_or_else(|| format!("feature gate {g:?} is not NAME=true|false"))?;
            let value = value
                .parse()
                .map_err(|_| format!("feature gate {g:?}: {value:?} is not true or false"))?;
            Ok((name.to_string(), value))
        })
        .collect()
}

/// Ports the kubelet listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The authenticated HTTPS API (`/containerLogs`, `/pods`, ...).
    pub main: u16,
    /// The read-only HTTP API (`/pods`, `/stats/summary`, `/metrics/cadvisor`).
    pub read_only: u16,
    /// `/healthz`.
    pub healthz: u16,
}

/// The KubeletConfiguration for crid at `socket`: cgroupfs, evented PLEG,
/// ports on 127.0.0.1, static pods from `manifests`, pod logs in `pod_logs`,
/// eviction and image GC thresholds low enough that a busy shared disk does
/// not evict the test's pods.
pub fn kubelet_config(
    socket: &Path,
    manifests: &Path,
    pod_logs: &Path,
    ports: Ports,
    gates: &[(String, bool)],
) -> Value {
    let endpoint = format!("unix://{}", socket.display());
    let mut feature_gates = serde_json::Map::new();
    feature_gates.insert("EventedPLEG".into(), Value::Bool(true));
    for (name, on) in gates {
        feature_gates.insert(name.clone(), Value::Bool(*on));
    }
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": true,
        "failSwapOn": false,
        "failCgroupV1": false,
        "protectKernelDefaults": true,
        "featureGates": feature_gates,
        "staticPodPath": manifests,
        "fileCheckFrequency": "5s",
        "podLogsDir": pod_logs,
        "volumePluginDir": pod_logs.with_file_name("volume-plugins"),
        "address": "127.0.0.1",
        "port": ports.main,
        "readOnlyPort": ports.read_only,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%"
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
    })
}

/// The probed pod: two long-running containers that log, `server` (busybox
/// httpd) with an HTTP liveness probe and an exec readiness probe, `worker`
/// (burns some CPU, holds some memory) with exec liveness and readiness
/// probes.
pub fn probed_manifest(image: &str) -> Value {
    let exec = |cmd: &str| json!({"command": ["/bin/sh", "-c", cmd]});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probed", "namespace": "default"},
        "spec": {
            "restartPolicy": "Always",
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c",
                        "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && \
                         touch /tmp/ready; i=0; while true; do echo \"server line $i\"; \
                         i=$((i+1)); sleep 1; done"],
                    "ports": [{"containerPort": 8080}],
                    "livenessProbe": {"httpGet": {"path": "/", "port": 8080},
                                      "periodSeconds": 2, "failureThreshold": 3},
                    "readinessProbe": {"exec": exec("test -f /tmp/ready"), "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}}
                },
                {
                    "name": "worker",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c",
                        "blob=$(head -c 4000000 /dev/zero | tr '\\0' x); i=0; while true; do \
                         echo \"worker line $i\"; i=$((i+1)); n=0; \
                         while [ $n -lt 3000 ]; do n=$((n+1)); done; sleep 1; done"],
                    "livenessProbe": {"exec": exec("true"), "periodSeconds": 2},
                    "readinessProbe": {"exec": exec("test -d /proc/1"), "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}}
                }
            ]
        }
    })
}

/// The crashing pod: one container that logs a line and exits 3 after a
/// second, restarted by the kubelet (restartPolicy Always) with its
/// crash-loop back-off.
pub fn crashy_manifest(image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crashy", "namespace": "default"},
        "spec": {
            "restartPolicy": "Always",
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "restarter",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", "echo \"restarter run at $(date +%s)\"; sleep 1; exit 3"]
            }]
        }
    })
}

/// One container as the kubelet's `/pods` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name in the pod spec.
    pub name: String,
    /// Readiness as the kubelet's probes set it.
    pub ready: bool,
    /// The kubelet's restart count.
    pub restart_count: u64,
    /// State `running`.
    pub running: bool,
    /// The runtime's id without the `<runtime>://` prefix.
    pub id: String,
}

/// One pod as the kubelet's `/pods` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name (`<manifest name>-<node>` for static pods).
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Status phase (`Running`, `Pending`, ...; empty before the first status).
    pub phase: String,
    /// Container statuses.
    pub containers: Vec<ContainerView>,
}

impl PodView {
    /// The container called `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// Parses the kubelet's `/pods` (a PodList).
pub fn parse_pods(json: &str) -> Result<Vec<PodView>, BoxError> {
    let list: Value = serde_json::from_str(json)?;
    let items = list["items"].as_array().ok_or("/pods: no items array")?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(items
        .iter()
        .map(|p| PodView {
            name: s(&p["metadata"]["name"]),
            uid: s(&p["metadata"]["uid"]),
            phase: s(&p["status"]["phase"]),
            containers: p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| ContainerView {
                            name: s(&c["name"]),
                            ready: c["ready"].as_bool().unwrap_or(false),
                            restart_count: c["restartCount"].as_u64().unwrap_or(0),
                            running: c["state"]["running"].is_object(),
                            id: s(&c["containerID"])
                                .split_once("://")
                                .map(|(_, id)| id.to_string())
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// CPU and memory of one pod or container in `/stats/summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `cpu.usageCoreNanoSeconds`.
    pub cpu_core_ns: u64,
    /// `memory.workingSetBytes`.
    pub working_set: u64,
}

/// A pod's usage and its containers' (by name).
pub type PodUsage = (Usage, Vec<(String, Usage)>);

/// A pod's usage and its containers' (by name) in `/stats/summary`.
pub fn pod_summary(json: &str, pod: &str) -> Result<Option<PodUsage>, BoxError> {
    let summary: Value = serde_json::from_str(json)?;
    let usage = |v: &Value| Usage {
        cpu_core_ns: v["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0),
        working_set: v["memory"]["workingSetBytes"].as_u64().unwrap_or(0),
    };
    let pods = summary["pods"]
        .as_array()
        .ok_or("/stats/summary: no pods array")?;
    Ok(pods.iter().find(|p| p["podRef"]["name"] == pod).map(|p| {
        let containers = p["containers"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), usage(c)))
                    .collect()
            })
            .unwrap_or_default();
        (usage(p), containers)
    }))
}

/// Samples of `metric` in Prometheus text whose label set contains
/// `needle` (e.g. `pod="probed-crid-kubelet"` or a pod UID), as (labels,
/// value).
pub fn metric_samples(text: &str, metric: &str, needle: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, v) = r.rsplit_once('}')?;
                    (labels, v)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            labels.contains(needle).then(|| (labels.to_string(), value))
        })
        .collect()
}

/// Counts `needle` lines in `text`.
fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The outcome of [`run`]: each check's name, result and detail.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (check, passed, detail), in the order run.
    pub checks: Vec<(String, bool, String)>,
    /// What the clean-up found left behind.
    pub leftovers: Vec<String>,
}

impl Outcome {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!(
            "kubelet: {} {name}: {detail}",
            if ok { "PASS" } else { "FAIL" }
        );
        self.checks.push((name.to_string(), ok, detail));
    }

    /// Checks that passed.
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.1).count()
    }

    /// Checks that failed.
    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }
}

/// GET over plain HTTP (the read-only and healthz ports).
async fn http_get(url: String) -> Result<String, BoxError> {
    tokio::task::spawn_blocking(move || -> Result<String, BoxError> {
        Ok(ureq::get(&url)
            .timeout(Duration::from_secs(20))
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?
            .into_string()?)
    })
    .await?
}

/// GET on the kubelet's HTTPS port (self-signed certificate, anonymous
/// access) with curl.
async fn https_get(url: String) -> Result<String, BoxError> {
    let out = tokio::process::Command::new("curl")
        .args(["-sSfk", "--max-time", "20", &url])
        .output()
        .await
        .map_err(|e| format!("running curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("GET {url}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kubelet process (in its private mount namespace) and its files.
struct Kubelet {
    child: Option<Child>,
    ports: Ports,
    log_path: PathBuf,
    manifests: PathBuf,
    /// This run created the (empty) mount point /var/lib/kubelet.
    made_var_lib_kubelet: bool,
}

impl Kubelet {
    /// Starts `bin` with its root dir, config and static pods under `dir`.
    fn start(
        bin: &Path,
        dir: &Path,
        crid_socket: &Path,
        gates: &[(String, bool)],
    ) -> Result<Kubelet, BoxError> {
        let root = dir.join("root");
        let manifests = dir.join("manifests");
        let pod_logs = dir.join("pod-logs");
        let tunables = dir.join("tunables");
        for d in [&root, &manifests, &pod_logs, &tunables] {
            std::fs::create_dir_all(d)?;
        }
        let ports = Ports {
            main: free_port()?,
            read_only: free_port()?,
            healthz: free_port()?,
        };
        let config = dir.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&kubelet_config(
                crid_socket,
                &manifests,
                &pod_logs,
                ports,
                gates,
            ))?,
        )?;
        // The tunables' files, bound over /proc/sys in the kubelet's own mount
        // namespace: it reads what it wants and writes nothing.
        let mut script = String::from("set -e\n");
        for (name, value) in KERNEL_TUNABLES {
            let file = tunables.join(name.replace('/', "."));
            std::fs::write(&file, format!("{value}\n"))?;
            script.push_str(&format!(
                "mount --bind '{}' /proc/sys/{name}\n",
                file.display()
            ));
        }
        // The device plugin manager's socket dir is /var/lib/kubelet whatever
        // --root-dir says: bind the test's own dir over it (over an empty
        // mount point made here if the host has none, removed afterwards).
        let var_lib = dir.join("var-lib-kubelet");
        std::fs::create_dir_all(&var_lib)?;
        let made_var_lib_kubelet = !Path::new(VAR_LIB_KUBELET).exists();
        if made_var_lib_kubelet {
            std::fs::create_dir(VAR_LIB_KUBELET)?;
        }
        script.push_str(&format!(
            "mount --bind '{}' {VAR_LIB_KUBELET}\n",
            var_lib.display()
        ));
        script.push_str("exec \"$@\"\n");
        let log_path = dir.join("kubelet.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .arg("kubelet")
            .arg(bin)
            .arg(format!("--config={}", config.display()))
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--cert-dir={}", root.join("pki").display()))
            .arg(format!("--hostname-override={NODE}"))
            // 4: the evented PLEG's "Received Container ... Event" lines.
            .arg("--v=4")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                if made_var_lib_kubelet {
                    let _ = std::fs::remove_dir(VAR_LIB_KUBELET);
                }
                format!("starting the kubelet under unshare: {e}")
            })?;
        Ok(Kubelet {
            child: Some(child),
            ports,
            log_path,
            manifests,
            made_var_lib_kubelet,
        })
    }

    fn read_only(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.read_only)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    async fn pods(&self) -> Result<Vec<PodView>, BoxError> {
        parse_pods(&http_get(self.read_only("/pods")).await?)
    }

    async fn pod(&self, name: &str) -> Option<PodView> {
        let full = format!("{name}-{NODE}");
        self.pods().await.ok()?.into_iter().find(|p| p.name == full)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::crid::terminate(&mut c, Duration::from_secs(10));
        }
        if std::mem::take(&mut self.made_var_lib_kubelet) {
            // Empty on the host: the kubelet wrote through the bind mount.
            let _ = std::fs::remove_dir(VAR_LIB_KUBELET);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The probed pod is Running with both containers running and ready.
fn probed_healthy(p: &PodView) -> bool {
    p.phase == "Running"
        && ["server", "worker"]
            .iter()
            .all(|n| p.container(n).is_some_and(|c| c.running && c.ready))
}

fn restarts(p: &PodView, name: &str) -> Option<u64> {
    p.container(name).map(|c| c.restart_count)
}

/// Polls `f` every second (the kubelet's pace) until it returns `Some`
/// or `timeout` passes.
async fn poll<T, F, Fut>(timeout: Duration, f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::poll_every(timeout, Duration::from_secs(1), f).await
}

/// Brings the node up (registry, containerd, crid, kubelet), runs the
/// checks, tears everything down, and reports.
pub async fn run(opts: &RunOptions) -> Result<Outcome, BoxError> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let reg = Registry::start(crate::RegistryOptions::default())?;
    let img = ImageBuilder::busybox()?.build()?;
    img.push(&reg.target(), "crid-test/busybox", &["latest"])?;
    let image = format!("{}/crid-test/busybox:latest", reg.host());
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd")).await?;
    let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
    config.log.level = "debug,h2=info,tower=info,hyper=info".into();
    let net = TestNet::new(NET, &mut config, None);
    let mut crid = Some(CridProcess::start(config.clone()).await?);
    let host_paths_before: Vec<bool> = KUBELET_HOST_PATHS
        .iter()
        .map(|p| Path::new(p).exists())
        .collect();
    let kdir = dir.path().join("kubelet");
    let mut kubelet = Kubelet::start(&opts.kubelet, &kdir, &config.socket, &opts.feature_gates)?;
    println!(
        "kubelet: {} on crid {} (node {NODE}, ports {:?}, feature gates EventedPLEG=true {:?}, \
         logs in {})",
        opts.kubelet.display(),
        config.socket.display(),
        kubelet.ports,
        opts.feature_gates,
        opts.out_dir.display()
    );
    let stats_from_cri = opts
        .feature_gates
        .iter()
        .any(|(g, on)| g == "PodAndContainerStatsFromCRI" && *on);

    let mut outcome = Outcome::default();
    let result = scenario(
        &mut outcome,
        &mut kubelet,
        &mut crid,
        &config,
        &image,
        stats_from_cri,
    )
    .await;
    if let Err(e) = &result {
        outcome.check("scenario ran to the end", false, e.to_string());
    }

    // Clean up as an operator would: the manifests go, the kubelet stops
    // the pods; then whatever is left goes through crid.
    for f in std::fs::read_dir(&kubelet.manifests)
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_file(f.path());
    }
    let stopped = match &crid {
        Some(c) => poll(Duration::from_secs(60), || async {
            let mut cl = c.clients().await.ok()?;
            let running = cl
                .runtime
                .list_containers(cri::ListContainersRequest { filter: None })
                .await
                .ok()?
                .into_inner()
                .containers
                .into_iter()
                .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
                .count();
            let ready = cl
                .runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
                .ok()?
                .into_inner()
                .items
                .into_iter()
                .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
                .count();
            (running == 0 && ready == 0).then_some(())
        })
        .await
        .is_some(),
        None => false,
    };
    if !stopped {
        outcome.leftovers.push(
            "the kubelet had not stopped the pods (crid's view) 60 s after their manifests went"
                .into(),
        );
    }
    kubelet.stop();
    let _ = std::fs::copy(&kubelet.log_path, opts.out_dir.join("kubelet.log"));
    let mut crid = match crid {
        Some(c) => c,
        None => CridProcess::start(config.clone()).await?,
    };
    if let Ok(mut c) = crid.clients().await {
        let pods = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        // Stopped sandboxes the kubelet had not garbage-collected yet are
        // normal; a ready one is a leak.
        for p in pods {
            if p.state == cri::PodSandboxState::SandboxReady as i32 {
                outcome.leftovers.push(format!(
                    "ready pod {} ({:?})",
                    p.id,
                    p.metadata.map(|m| m.name)
                ));
            }
            if let Err(e) = crate::workload::remove_pod(&mut c, &p.id).await {
                outcome
                    .leftovers
                    .push(format!("removing pod {}: {e}", p.id));
            }
        }
    }
    crid.stop();
    let _ = std::fs::copy(&crid.log_path, opts.out_dir.join("crid.log"));
    let _ = std::fs::copy(
        dir.path().join("containerd/containerd.log"),
        opts.out_dir.join("containerd.log"),
    );
    let helpers = crate::pod_processes(dir.path());
    if !helpers.is_empty() {
        outcome
            .leftovers
            .push(format!("pod processes after removal: {helpers:?}"));
    }
    crate::kill_leftover_pods(dir.path(), &crid.config.state_dir);
    for m in crate::mounts_under(dir.path()) {
        if !m.starts_with(dir.path().join("containerd")) {
            outcome.leftovers.push(format!("mount {}", m.display()));
        }
    }
    for (p, before) in KUBELET_HOST_PATHS.iter().zip(&host_paths_before) {
        if !before && Path::new(p).exists() {
            outcome
                .leftovers
                .push(format!("host path {p} (not there before)"));
        }
    }
    // The kubelet's QoS cgroups (cgroupRoot /): nothing else on this
    // machine uses `kubepods`.
    for left in crate::remove_cgroup_everywhere("kubepods") {
        outcome.leftovers.push(format!("cgroup {}", left.display()));
    }
    drop(net);
    drop(ctrd);
    drop(reg);
    drop(dir);
    outcome.check(
        "clean-up left nothing (pods, pod processes, mounts, kubepods cgroups, kubelet host paths)",
        outcome.leftovers.is_empty(),
        if outcome.leftovers.is_empty() {
            "none".to_string()
        } else {
            outcome.leftovers.join("; ")
        },
    );
    Ok(outcome)
}

/// The checks, against the running node.
async fn scenario(
    out: &mut Outcome,
    kubelet: &mut Kubelet,
    crid: &mut Option<CridProcess>,
    config: &crid_common::config::Config,
    image: &str,
    stats_from_cri: bool,
) -> Result<(), BoxError> {
    let healthz = format!("http://127.0.0.1:{}/healthz", kubelet.ports.healthz);
    let up = poll(Duration::from_secs(60), || {
        let url = healthz.clone();
        async move { http_get(url).await.ok().filter(|b| b.trim() == "ok") }
    })
    .await;
    if let Some(st) = kubelet.exited() {
        return Err(format!("the kubelet exited ({st}); see kubelet.log").into());
    }
    out.check(
        "kubelet healthy on crid",
        up.is_some(),
        format!("GET {healthz}: {up:?}"),
    );
    up.ok_or("the kubelet's /healthz did not say ok within 60 s")?;

    for (name, manifest) in [
        ("probed", probed_manifest(image)),
        ("crashy", crashy_manifest(image)),
    ] {
        std::fs::write(
            kubelet.manifests.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
    }
    let started = Instant::now();
    let probed = poll(Duration::from_secs(180), || async {
        kubelet.pod("probed").await.filter(probed_healthy)
    })
    .await;
    out.check(
        "static pod with two probed containers Running and Ready",
        probed.is_some(),
        format!(
            "after {:.1} s: {:?}",
            started.elapsed().as_secs_f64(),
            probed.clone().or(kubelet.pod("probed").await)
        ),
    );
    let probed = probed.ok_or("the probed pod did not become Running and Ready")?;
    let uid = probed.uid.clone();

    // Restarts of the crashing container, as the kubelet counts them.
    let crashy = poll(Duration::from_secs(150), || async {
        kubelet
            .pod("crashy")
            .await
            .filter(|p| restarts(p, "restarter").unwrap_or(0) >= 2)
    })
    .await;
    out.check(
        "crashing container's restart count rises",
        crashy.is_some(),
        format!("{:?}", crashy.clone().or(kubelet.pod("crashy").await)),
    );
    let log = kubelet.log();
    let stopped_events = count_lines(&log, "Received Container Stopped Event");
    let fell_back = count_lines(&log, "Fall back to Generic PLEG");
    out.check(
        "the kubelet saw the exits through CRI container events (evented PLEG)",
        stopped_events >= 2 && fell_back == 0,
        format!(
            "{stopped_events} 'Received Container Stopped Event' lines, \
             {fell_back} 'Fall back to Generic PLEG' lines in the kubelet log"
        ),
    );

    let now = kubelet.pod("probed").await.ok_or("probed pod gone")?;
    out.check(
        "probed containers never restarted",
        restarts(&now, "server") == Some(0) && restarts(&now, "worker") == Some(0),
        format!(
            "server {:?}, worker {:?}",
            restarts(&now, "server"),
            restarts(&now, "worker")
        ),
    );

    check_logs(out, kubelet, "before the crid restart").await;
    check_stats(out, kubelet, &uid, stats_from_cri).await;

    // crid restarts under the running pods.
    let ids_before: Vec<String> = now.containers.iter().map(|c| c.id.clone()).collect();
    let crashy_before = kubelet
        .pod("crashy")
        .await
        .and_then(|p| restarts(&p, "restarter"))
        .unwrap_or(0);
    if let Some(mut c) = crid.take() {
        c.stop();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    *crid = Some(CridProcess::start(config.clone()).await?);
    let restarted_at = Instant::now();
    // A probe period and a back-off or two later.
    let after = poll(Duration::from_secs(120), || async {
        let p = kubelet.pod("crashy").await?;
        (restarts(&p, "restarter")? > crashy_before
            && restarted_at.elapsed() > Duration::from_secs(20))
        .then_some(p)
    })
    .await;
    let probed_after = kubelet.pod("probed").await;
    out.check(
        "after the crid restart: probed pod Running and Ready, restart counts 0, same containers",
        probed_after.as_ref().is_some_and(|p| {
            probed_healthy(p)
                && restarts(p, "server") == Some(0)
                && restarts(p, "worker") == Some(0)
                && p.containers
                    .iter()
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
                    == ids_before
        }),
        format!("{probed_after:?} (containers before: {ids_before:?})"),
    );
    let log = kubelet.log();
    println!(
        "kubelet: note: with crid away the kubelet's evented PLEG retried {} times and fell back \
         to relisting {} time(s) (its eventedPlegMaxStreamRetries is 5, never reset: kubelet \
         behaviour, the same with any runtime); restarts are counted by relisting from here on",
        count_lines(&log, "Evented PLEG: Failed to get container events"),
        count_lines(&log, "Fall back to Generic PLEG")
    );
    out.check(
        "after the crid restart: the crashing container keeps being restarted",
        after.is_some(),
        format!(
            "restart count {crashy_before} before, now {:?}",
            kubelet
                .pod("crashy")
                .await
                .and_then(|p| restarts(&p, "restarter"))
        ),
    );
    let c = crid.as_ref().ok_or("crid is not running")?;
    let mut clients = c.clients().await?;
    let sandboxes = clients
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let probed_sandboxes: Vec<_> = sandboxes
        .iter()
        .filter(|s| s.metadata.as_ref().is_some_and(|m| m.uid == uid))
        .map(|s| (s.id.clone(), s.state))
        .collect();
    out.check(
        "after the crid restart: still one sandbox for the probed pod",
        probed_sandboxes.len() == 1
            && probed_sandboxes[0].1 == cri::PodSandboxState::SandboxReady as i32,
        format!("{probed_sandboxes:?}"),
    );
    check_logs(out, kubelet, "after the crid restart").await;
    Ok(())
}

/// `/containerLogs` of both probed containers (the files crid's pod
/// helper writes, read by the kubelet) and the crashing container's
/// previous run.
async fn check_logs(out: &mut Outcome, kubelet: &Kubelet, when: &str) {
    let base = format!(
        "https://127.0.0.1:{}/containerLogs/default",
        kubelet.ports.main
    );
    for (pod, container, needle, query) in [
        ("probed", "server", "server line", "?tailLines=3"),
        ("probed", "worker", "worker line", "?tailLines=3"),
        ("crashy", "restarter", "restarter run at", "?previous=true"),
    ] {
        let url = format!("{base}/{pod}-{NODE}/{container}{query}");
        // Retried for a while: `previous` is the kubelet's pod status's
        // last terminated instance, and with the crash loop that status
        // can lag the removal of that instance by up to a back-off period
        // (seen: 21 s, with a 40 s back-off, after the crid restart).
        let mut got = https_get(url.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !got.as_ref().is_ok_and(|t| t.contains(needle)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            got = https_get(url.clone()).await;
        }
        out.check(
            &format!("{when}: kubelet serves {pod}/{container} logs"),
            got.as_ref().is_ok_and(|t| t.contains(needle)),
            format!(
                "GET {url}: {}",
                match &got {
                    Ok(t) => t.trim().replace('\n', " | "),
                    Err(e) => e.to_string(),
                }
            ),
        );
    }
}

/// The probed pod's CPU and memory in `/stats/summary` and
/// `/metrics/cadvisor`; with `from_cri` (PodAndContainerStatsFromCRI) the
/// metrics come from crid's ListPodSandboxMetrics and every container's
/// series must carry its pod and container labels.
async fn check_stats(out: &mut Outcome, kubelet: &Kubelet, uid: &str, from_cri: bool) {
    let pod = format!("probed-{NODE}");
    let summary = poll(Duration::from_secs(60), || async {
        let text = http_get(kubelet.read_only("/stats/summary")).await.ok()?;
        let (p, cs) = pod_summary(&text, &pod).ok()??;
        let ok = p.cpu_core_ns > 0
            && p.working_set > 0
            && cs.len() == 2
            && cs
                .iter()
                .all(|(_, u)| u.cpu_core_ns > 0 && u.working_set > 0);
        ok.then_some((p, cs))
    })
    .await;
    out.check(
        "/stats/summary shows the pod's and its containers' CPU and memory",
        summary.is_some(),
        match &summary {
            Some((p, cs)) => format!("pod {p:?}, containers {cs:?}"),
            None => "no pod entry with non-zero CPU and memory within 60 s".into(),
        },
    );
    for metric in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
    ] {
        // Polled: in CRI mode the pod's CPU shows once it has used a whole
        // second.
        let mut last = (false, String::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let text = http_get(kubelet.read_only("/metrics/cadvisor"))
                .await
                .unwrap_or_default();
            last = metric_verdict(&text, metric, uid, &pod, from_cri);
            if last.0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        out.check(
            &format!("/metrics/cadvisor has {metric} for the pod"),
            last.0,
            last.1,
        );
    }
}

/// Whether `/metrics/cadvisor` (`text`) shows `metric` for the pod with
/// UID `uid` named `pod`, and what it shows. From cAdvisor: a non-zero
/// series of the pod's cgroup (named by UID; pod/container labels depend on
/// cAdvisor knowing the runtime). From the CRI (`from_cri`): series for the
/// pod and both containers with their labels, the pod's non-zero.
pub fn metric_verdict(
    text: &str,
    metric: &str,
    uid: &str,
    pod: &str,
    from_cri: bool,
) -> (bool, String) {
    let samples = metric_samples(text, metric, uid);
    let labelled = metric_samples(text, metric, &format!("pod=\"{pod}\""));
    // Values of the pod's (`container=""`) or a container's series.
    let of = |name: &str| -> Vec<f64> {
        labelled
            .iter()
            .filter(|(l, _)| l.contains(&format!("container=\"{name}\"")))
            .map(|(_, v)| *v)
            .collect()
    };
    let positive = |name: &str| of(name).iter().any(|v| *v > 0.0);
    let ok = if from_cri {
        // The CRI's metric values are unsigned integers: CPU seconds are
        // whole seconds, so a container that used less than one shows 0.
        // Memory is in bytes.
        !of("server").is_empty()
            && !of("worker").is_empty()
            && (metric.contains("cpu") || (positive("server") && positive("worker")))
            && positive("")
    } else {
        samples.iter().any(|(_, v)| *v > 0.0)
    };
    let detail = format!(
        "{} series with the pod UID, {} with pod=\"{pod}\" (values: pod {:?}, server {:?}, \
         worker {:?}); first: {:?}",
        samples.len(),
        labelled.len(),
        of(""),
        of("server"),
        of("worker"),
        labelled.first().or(samples.first())
    );
    (ok, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_list_gives_phase_readiness_and_restart_counts() {
        let json = r#"{"kind":"PodList","items":[{"metadata":{"name":"probed-n","uid":"u1"},
          "status":{"phase":"Running","containerStatuses":[
            {"name":"server","ready":true,"restartCount":0,"state":{"running":{"startedAt":"x"}},
             "containerID":"crid://abc"},
            {"name":"worker","ready":false,"restartCount":4,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}},
          {"metadata":{"name":"new","uid":"u2"},"status":{}}]}"#;
        let pods = parse_pods(json).unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].phase, "Running");
        let s = pods[0].container("server").unwrap();
        assert!(s.ready && s.running);
        assert_eq!(s.id, "abc");
        let w = pods[0].container("worker").unwrap();
        assert!(!w.ready && !w.running);
        assert_eq!(w.restart_count, 4);
        assert_eq!(w.id, "");
        assert!(!probed_healthy(&pods[0]));
        assert_eq!(pods[1].phase, "");
        assert!(pods[1].containers.is_empty());
        assert!(parse_pods("{}").is_err());
    }

    #[test]
    fn summary_gives_pod_and_container_usage() {
        let json = r#"{"node":{},"pods":[{"podRef":{"name":"other"}},
          {"podRef":{"name":"probed-n"},"cpu":{"usageCoreNanoSeconds":5},
           "memory":{"workingSetBytes":7},
           "containers":[{"name":"server","cpu":{"usageCoreNanoSeconds":2},"memory":{}}]}]}"#;
        let (p, cs) = pod_summary(json, "probed-n").unwrap().unwrap();
        assert_eq!(
            p,
            Usage {
                cpu_core_ns: 5,
                working_set: 7
            }
        );
        assert_eq!(
            cs,
            vec![(
                "server".to_string(),
                Usage {
                    cpu_core_ns: 2,
                    working_set: 0
                }
            )]
        );
        assert!(pod_summary(json, "absent").unwrap().is_none());
    }

    #[test]
    fn metric_samples_match_name_and_labels_exactly() {
        let text = "# HELP container_cpu_usage_seconds_total x\n\
            container_cpu_usage_seconds_total{id=\"/kubepods/podU1\",pod=\"\"} 1.5 1700000000000\n\
            container_cpu_usage_seconds_total_extra{id=\"/kubepods/podU1\"} 9\n\
            container_cpu_usage_seconds_total{id=\"/kubepods/podU2\"} 2\n\
            container_memory_working_set_bytes 3\n";
        assert_eq!(
            metric_samples(text, "container_cpu_usage_seconds_total", "podU1"),
            vec![("id=\"/kubepods/podU1\",pod=\"\"".to_string(), 1.5)]
        );
        assert_eq!(
            metric_samples(text, "container_memory_working_set_bytes", ""),
            vec![(String::new(), 3.0)]
        );
    }

    #[test]
    fn metric_verdict_wants_labelled_series_from_the_cri_and_a_pod_series_from_cadvisor() {
        let cadvisor = "container_cpu_usage_seconds_total{container=\"\",id=\"/kubepods/podU\",pod=\"p\"} 0.5\n";
        assert!(
            metric_verdict(
                cadvisor,
                "container_cpu_usage_seconds_total",
                "U",
                "p",
                false
            )
            .0
        );
        assert!(
            !metric_verdict(
                cadvisor,
                "container_cpu_usage_seconds_total",
                "U",
                "p",
                true
            )
            .0
        );
        let cri = "cpu_s{container=\"\",pod=\"p\",id=\"/k/podU\"} 1\n\
                   cpu_s{container=\"server\",pod=\"p\",id=\"/k/podU/a\"} 0\n\
                   cpu_s{container=\"worker\",pod=\"p\",id=\"/k/podU/b\"} 0\n";
        assert!(metric_verdict(cri, "cpu_s", "U", "p", true).0);
        let idle = cri.replace("} 1", "} 0");
        assert!(
            !metric_verdict(&idle, "cpu_s", "U", "p", true).0,
            "the pod's own series must count"
        );
        assert!(!metric_verdict(cri, "cpu_s", "U", "other", true).0);
        // Memory: every container's series must be non-zero too.
        let mem = cri.replace("cpu_s", "mem");
        assert!(!metric_verdict(&mem, "mem", "U", "p", true).0);
        let mem = mem.replace("} 0", "} 7");
        assert!(metric_verdict(&mem, "mem", "U", "p", true).0);
        assert!(!metric_verdict("", "m", "U", "p", false).0);
    }

    #[test]
    fn kubelet_config_keeps_every_port_on_loopback_and_protects_kernel_defaults() {
        let c = kubelet_config(
            Path::new("/x/crid.sock"),
            Path::new("/m"),
            Path::new("/l"),
            Ports {
                main: 1,
                read_only: 2,
                healthz: 3,
            },
            &[("PodAndContainerStatsFromCRI".into(), true)],
        );
        assert_eq!(c["containerRuntimeEndpoint"], "unix:///x/crid.sock");
        assert_eq!(c["address"], "127.0.0.1");
        assert_eq!(c["healthzBindAddress"], "127.0.0.1");
        assert_eq!(c["protectKernelDefaults"], true);
        assert_eq!(c["featureGates"]["EventedPLEG"], true);
        assert_eq!(c["featureGates"]["PodAndContainerStatsFromCRI"], true);
        assert_eq!(c["cgroupDriver"], "cgroupfs");
        assert_eq!(c["failSwapOn"], false);
    }

    #[test]
    fn feature_gates_parse_like_the_kubelets_flag() {
        assert_eq!(
            parse_feature_gates("A=true, B=false,").unwrap(),
            vec![("A".to_string(), true), ("B".to_string(), false)]
        );
        assert_eq!(parse_feature_gates("").unwrap(), vec![]);
        assert!(parse_feature_gates("A").is_err());
        assert!(parse_feature_gates("A=yes").is_err());
    }

    #[test]
    fn manifests_name_the_image_and_probe_the_long_running_containers() {
        let p = probed_manifest("reg/img:1");
        let cs = p["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        for c in cs {
            assert_eq!(c["image"], "reg/img:1");
            assert!(c["livenessProbe"].is_object() && c["readinessProbe"].is_object());
        }
        let c = crashy_manifest("reg/img:1");
        assert_eq!(c["spec"]["restartPolicy"], "Always");
    }
}
