//! A node for container tests: a local registry holding a busybox image, a
//! private containerd, crid, CRI clients, and helpers to run host-network
//! pods and containers the way the kubelet does (RunPodSandbox,
//! CreateContainer, StartContainer, ContainerStatus polling, log files).

use crate::images::{Compression, Entry, ImageBuilder};
use crate::net::TestNet;
use crate::{test_dir, CriClients, CridProcess, PrivateContainerd, Registry, RegistryOptions};
use crid_common::config::Config;
use crid_proto::cri;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The value of an optional CRI counter, 0 when absent.
pub fn val(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

/// One test's node, dropped in field order: clients, crid, containerd,
/// registry, dir.
pub struct Node {
    /// CRI clients on crid's socket.
    pub c: CriClients,
    /// crid.
    pub crid: CridProcess,
    /// Its private containerd.
    pub ctrd: PrivateContainerd,
    /// The registry the image came from.
    pub reg: Registry,
    /// The pulled busybox image's name.
    pub image: String,
    /// The test's directory (logs under `logs/`).
    pub dir: tempfile::TempDir,
}

impl Drop for Node {
    /// A failed test leaves pods behind: clean them up (passing tests assert
    /// their own cleanup, so this hides no leak).
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the pod helpers said helps explain the failure.
            for log in crate::files_named(self.dir.path(), "helper.log") {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!("--- {}\n{text}", log.display());
            }
            let log = self.crid.log();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains("rpc_layer: ok"))
                .take(40)
                .collect();
            eprintln!("--- crid log (last 40 lines, newest first)");
            for l in tail {
                eprintln!("{l}");
            }
            self.crid.stop();
            crate::kill_leftover_pods(self.dir.path(), &self.crid.config.state_dir);
        }
    }
}

/// A host-network pod config named `name` (own IPC and PID namespaces, no
/// CNI) logging under `logs/<name>`.
pub fn host_network_pod(logs: &std::path::Path, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container config running `sh -c script`.
pub fn sh(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

impl Node {
    /// Starts registry, containerd and crid, and pulls a busybox image
    /// (with `extra` files added in a layer).
    pub async fn start(extra: Vec<Entry>) -> Node {
        let mut b = ImageBuilder::busybox().unwrap();
        if !extra.is_empty() {
            b = b.layer(extra, Compression::Gzip);
        }
        Node::start_with_image(b, |_| {}).await
    }

    /// Like [`Node::start`], with the image `b` builds and crid's config
    /// adjusted by `configure` first (runtime handlers, a CNI network, ...).
    pub async fn start_with_image(b: ImageBuilder, configure: impl FnOnce(&mut Config)) -> Node {
        let reg = Registry::start(RegistryOptions::default()).unwrap();
        let img = b.build().unwrap();
        img.push(&reg.target(), "test/node", &["v1"]).unwrap();
        let dir = test_dir();
        let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
            .await
            .unwrap();
        let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
        configure(&mut config);
        let crid = CridProcess::start(config).await.unwrap();
        let mut c = crid.clients().await.unwrap();
        let image = format!("{}/test/node:v1", reg.host());
        c.image
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .unwrap();
        Node {
            c,
            crid,
            ctrd,
            reg,
            image,
            dir,
        }
    }

    /// Like [`Node::start`] with a CNI network `n` (see [`TestNet::new`])
    /// for pods made by [`Node::pod_config_with_netns`].
    pub async fn start_with_net(n: u8) -> (Node, TestNet) {
        let mut net = None;
        let node = Node::start_with_image(ImageBuilder::busybox().unwrap(), |c| {
            net = Some(TestNet::new(n, c, None));
        })
        .await;
        (node, net.expect("the config hook ran"))
    }

    /// A pod config like [`Node::pod_config`] with its own network
    /// namespace (CNI ADD on the node's test network).
    pub fn pod_config_with_netns(&self, name: &str) -> cri::PodSandboxConfig {
        let mut cfg = self.pod_config(name);
        if let Some(ns) = cfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.network = cri::NamespaceMode::Pod as i32;
        }
        cfg
    }

    /// Starts crid again with the same config (after a stop or a kill) and
    /// reconnects the clients.
    pub async fn restart_crid(&mut self) {
        self.crid.kill();
        self.crid = CridProcess::start(self.crid.config.clone()).await.unwrap();
        self.c = self.crid.clients().await.unwrap();
    }

    /// ListPodSandbox without a filter.
    pub async fn list_pods(&self) -> Vec<cri::PodSandbox> {
        self.c
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items
    }

    /// ListContainers without a filter.
    pub async fn list_containers(&self) -> Vec<cri::Container> {
        self.c
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
    }

    /// ImageStatus of `image` (panics if crid does not have it).
    pub async fn image_status(&mut self, image: &str) -> cri::Image {
        self.c
            .image
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap_or_else(|| panic!("{image} not in crid's image store"))
    }

    /// Waits until pod `pod`'s log file `<name>.log` (the log path [`sh`]
    /// sets) contains `needle`.
    pub async fn wait_logged(&self, pod: &str, name: &str, needle: &str, timeout: Duration) {
        wait_log_contains(
            &self.log_dir(pod).join(format!("{name}.log")),
            needle,
            timeout,
        )
        .await
    }

    /// The pod's log directory.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        self.dir.path().join("logs").join(pod)
    }

    /// A host-network pod config (own IPC and PID namespaces, no CNI).
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        host_network_pod(&self.dir.path().join("logs"), name)
    }

    /// Runs a pod from `cfg` with the default runtime handler; returns its id.
    pub async fn run_pod(&mut self, cfg: &cri::PodSandboxConfig) -> String {
        self.run_pod_with(cfg, "").await
    }

    /// Runs a pod from `cfg` with runtime handler `handler`; returns its id.
    pub async fn run_pod_with(&mut self, cfg: &cri::PodSandboxConfig, handler: &str) -> String {
        self.c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    /// The pid of pod `pod`'s helper (verbose PodSandboxStatus).
    pub async fn helper_pid(&mut self, pod: &str) -> u32 {
        crate::bench::helper_pid(&mut self.c, pod).await.unwrap()
    }

    /// Waits until crid's supervisor has replaced pod `pod`'s helper `old`
    /// with a running one; returns the new pid. Panics after 20 s.
    pub async fn wait_helper_replaced(&mut self, pod: &str, old: u32) -> u32 {
        let new = crate::wait_for(Duration::from_secs(20), || {
            let mut c = self.c.clone();
            let pod = pod.to_string();
            async move {
                let pid = crate::bench::helper_pid(&mut c, &pod).await.ok()?;
                (pid != old && crate::parent_pid(pid).is_some()).then_some(pid)
            }
        })
        .await;
        new.unwrap_or_else(|| panic!("helper {old} not replaced; log:\n{}", self.crid.log()))
    }

    /// CreateContainer.
    pub async fn create(
        &mut self,
        pod: &str,
        pod_cfg: &cri::PodSandboxConfig,
        cfg: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// StartContainer.
    pub async fn start_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// CreateContainer + StartContainer; returns the id.
    pub async fn run(
        &mut self,
        pod: &str,
        pod_cfg: &cri::PodSandboxConfig,
        cfg: cri::ContainerConfig,
    ) -> String {
        let id = self.create(pod, pod_cfg, cfg).await.unwrap();
        self.start_container(&id).await.unwrap();
        id
    }

    /// ContainerStatus (verbose).
    pub async fn status(&mut self, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
        self.c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .map(|r| r.into_inner().status.unwrap_or_default())
    }

    /// ContainerStatus's verbose `info` JSON.
    pub async fn container_info(&mut self, id: &str) -> serde_json::Value {
        let info = self
            .c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        serde_json::from_str(info.get("info").map_or("null", String::as_str)).unwrap()
    }

    /// PodSandboxStatus's verbose `info` JSON.
    pub async fn pod_info(&mut self, id: &str) -> serde_json::Value {
        let info = self
            .c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        serde_json::from_str(info.get("info").map_or("null", String::as_str)).unwrap()
    }

    /// Polls ContainerStatus until the container has exited.
    pub async fn wait_exited(&mut self, id: &str, timeout: Duration) -> cri::ContainerStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.status(id).await.unwrap();
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {id} still {:?} after {timeout:?}",
                s.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// StopContainer.
    pub async fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    /// RemoveContainer.
    pub async fn remove_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// StopPodSandbox.
    pub async fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// RemovePodSandbox.
    pub async fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// PodSandboxStatus (not verbose).
    pub async fn pod_status(&mut self, id: &str) -> Result<cri::PodSandboxStatus, tonic::Status> {
        self.c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().status.unwrap_or_default())
    }

    /// ContainerStats of `id` (panics on an error).
    pub async fn container_stats(&self, id: &str) -> cri::ContainerStats {
        let mut rt = self.c.runtime.clone();
        rt.container_stats(cri::ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("ContainerStats has stats")
    }

    /// PodSandboxStats of `id` (panics on an error).
    pub async fn pod_stats(&self, id: &str) -> cri::PodSandboxStats {
        let mut rt = self.c.runtime.clone();
        rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("PodSandboxStats has stats")
    }

    /// ListPodSandboxStats without a filter.
    pub async fn list_pod_stats(&self) -> Vec<cri::PodSandboxStats> {
        let mut rt = self.c.runtime.clone();
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats
    }

    /// ListMetricDescriptors: each metric's label keys by name.
    pub async fn metric_descriptors(&self) -> HashMap<String, Vec<String>> {
        let mut rt = self.c.runtime.clone();
        rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name, d.label_keys))
            .collect()
    }

    /// ListPodSandboxMetrics.
    pub async fn pod_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        let mut rt = self.c.runtime.clone();
        rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub async fn stop_remove_pod(&mut self, id: &str) {
        self.stop_pod(id).await.unwrap();
        self.remove_pod(id).await.unwrap();
    }

    /// `ctr` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> String {
        crate::ctr(&self.ctrd.socket(), args)
    }

    /// Asserts containerd holds no container and no task any more.
    pub fn assert_no_containerd_objects(&self) {
        let (ctrs, tasks) = self.ctrd_objects();
        assert!(
            ctrs.trim().is_empty() && tasks.trim().is_empty(),
            "{ctrs} {tasks}"
        );
    }

    /// Asserts no container of any pod is left: none listed by crid, no
    /// containerd container or task, no active snapshot, no crid record.
    pub async fn assert_no_container_left(&mut self) {
        let listed = self
            .c
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(listed.is_empty(), "{listed:?}");
        self.assert_no_containerd_objects();
        let active: Vec<String> = self
            .ctr(&["snapshots", "ls"])
            .lines()
            .filter(|l| l.trim_end().ends_with("Active"))
            .map(str::to_string)
            .collect();
        assert!(active.is_empty(), "{active:?}");
        let records = self.crid.config.state_dir.join("containers");
        let left: Vec<_> = std::fs::read_dir(&records)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }

    /// containerd's container ids and task list, for leak checks.
    pub fn ctrd_objects(&self) -> (String, String) {
        (
            self.ctr(&["containers", "ls", "-q"]),
            self.ctr(&["tasks", "ls", "-q"]),
        )
    }
}

/// Waits until the log file at `path` contains `needle`; panics after `timeout`.
pub async fn wait_log_contains(path: &std::path::Path, needle: &str, timeout: Duration) {
    if !log_contains(path, needle, timeout).await {
        panic!("{} never contained {needle:?}", path.display());
    }
}

/// Whether the log file at `path` contains `needle` within `timeout`.
pub async fn log_contains(path: &std::path::Path, needle: &str, timeout: Duration) -> bool {
    let p = path.to_path_buf();
    crate::wait_for(timeout, || {
        let p = p.clone();
        async move {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(needle)
                .then_some(())
        }
    })
    .await
    .is_some()
}

/// The content of every CRI log line of `log` (`<ts> <stream> <tag> <msg>`),
/// as (stream, tag, content); panics on a malformed line.
pub fn parse_cri_log(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let ts = f.next().unwrap_or_default();
            // RFC3339Nano as Go prints it: trailing zeros of the fraction dropped.
            let b = ts.as_bytes();
            assert!(
                ts.ends_with('Z')
                    && (20..=30).contains(&ts.len())
                    && b.get(4) == Some(&b'-')
                    && b.get(10) == Some(&b'T')
                    && b.get(19).is_none_or(|c| *c == b'.' || *c == b'Z'),
                "bad timestamp in {l:?}"
            );
            let stream = f.next().unwrap_or_default().to_string();
            assert!(
                stream == "stdout" || stream == "stderr",
                "bad stream in {l:?}"
            );
            let tag = f.next().unwrap_or_default().to_string();
            assert!(tag == "F" || tag == "P", "bad tag in {l:?}");
            (stream, tag, f.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// Joins P…F pieces of one stream into whole lines.
pub fn join_lines(entries: &[(String, String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut partial: std::collections::HashMap<String, String> = Default::default();
    for (stream, tag, content) in entries {
        let acc = partial.entry(stream.clone()).or_default();
        acc.push_str(content);
        if tag == "F" {
            out.push((stream.clone(), std::mem::take(acc)));
        }
    }
    out
}
