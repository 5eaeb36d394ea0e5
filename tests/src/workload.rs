//! A CRI-generic workload driver for benchmarks and the peer's e2e test: the
//! calls a kubelet makes to start a pod with one container, against any CRI
//! runtime (crid or containerd's CRI plugin) through [`CriClients`].
//!
//! Errors keep their `tonic::Status`, so a caller can tell an unimplemented
//! RPC ([`unimplemented`]) from a failure.

use crate::crid::CriClients;
use crate::BoxError;
use crid_proto::cri;
use std::path::Path;
use std::time::{Duration, Instant};

/// The RPC named in an `Unimplemented` status, if `e` is one.
pub fn unimplemented(e: &BoxError) -> Option<String> {
    let s = e.downcast_ref::<tonic::Status>()?;
    (s.code() == tonic::Code::Unimplemented).then(|| s.message().to_string())
}

/// A pod with its own network namespace (CNI), PID and IPC namespaces,
/// logs under `log_dir` and cgroup parent `cgroup_parent`.
pub fn pod_config(name: &str, log_dir: &Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container running `command` from `image`, logging to `log_path`
/// (relative to the pod's log directory).
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    log_path: &str,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: log_path.into(),
        // What the kubelet sends for a pod without shareProcessNamespace.
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pulls `image`; returns its image ref.
pub async fn pull(c: &mut CriClients, image: &str) -> Result<String, BoxError> {
    Ok(c.image
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .image_ref)
}

/// RunPodSandbox; returns the pod id.
pub async fn run_pod(c: &mut CriClients, cfg: &cri::PodSandboxConfig) -> Result<String, BoxError> {
    Ok(c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

/// CreateContainer + StartContainer; returns the container id.
pub async fn create_and_start(
    c: &mut CriClients,
    pod_id: &str,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: &cri::ContainerConfig,
) -> Result<String, BoxError> {
    let id = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(cfg.clone()),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    Ok(id)
}

/// One pod started with one container, and how long each step took.
#[derive(Debug, Clone)]
pub struct Started {
    /// Pod sandbox id.
    pub pod_id: String,
    /// Container id.
    pub container_id: String,
    /// RunPodSandbox.
    pub run_pod: Duration,
    /// CreateContainer + StartContainer.
    pub create_start: Duration,
}

impl Started {
    /// RunPodSandbox + CreateContainer + StartContainer.
    pub fn total(&self) -> Duration {
        self.run_pod + self.create_start
    }
}

/// RunPodSandbox, CreateContainer, StartContainer, timed. A pod left behind
/// by a failed container step is stopped and removed before returning the
/// error.
pub async fn start_pod(
    c: &mut CriClients,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: &cri::ContainerConfig,
) -> Result<Started, BoxError> {
    let t = Instant::now();
    let pod_id = run_pod(c, pod_cfg).await?;
    let run_pod_t = t.elapsed();
    let t = Instant::now();
    match create_and_start(c, &pod_id, pod_cfg, cfg).await {
        Ok(container_id) => Ok(Started {
            pod_id,
            container_id,
            run_pod: run_pod_t,
            create_start: t.elapsed(),
        }),
        Err(e) => {
            let _ = remove_pod(c, &pod_id).await;
            Err(e)
        }
    }
}

/// ContainerStatus (not verbose).
pub async fn status(c: &mut CriClients, id: &str) -> Result<cri::ContainerStatus, BoxError> {
    c.runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| "ContainerStatus without status".into())
}

/// Polls ContainerStatus every `poll` until the container is in `state` (or
/// exited, which also ends a wait for running); fails after `timeout`.
pub async fn wait_state(
    c: &mut CriClients,
    id: &str,
    state: cri::ContainerState,
    poll: Duration,
    timeout: Duration,
) -> Result<cri::ContainerStatus, BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(c, id).await?;
        if st.state == state as i32 || st.state == cri::ContainerState::ContainerExited as i32 {
            return Ok(st);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "container {id} not {state:?} within {timeout:?} (state {})",
                st.state
            )
            .into());
        }
        tokio::time::sleep(poll).await;
    }
}

/// ExecSync `cmd` in container `id`.
pub async fn exec_sync(
    c: &mut CriClients,
    id: &str,
    cmd: &[&str],
    timeout_s: i64,
) -> Result<cri::ExecSyncResponse, BoxError> {
    Ok(c.runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_s,
        })
        .await?
        .into_inner())
}

/// StopPodSandbox + RemovePodSandbox (the pod's containers go with it).
pub async fn remove_pod(c: &mut CriClients, pod_id: &str) -> Result<(), BoxError> {
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await?;
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await?;
    Ok(())
}

/// The p-th percentile (0..=1, nearest rank) of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// utime + stime of a process in seconds (/proc/PID/stat; clock ticks of 100 Hz).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture we run on.
    Some((utime + stime) as f64 / 100.0)
}

/// A kB field of /proc/PID/smaps_rollup (`Pss:`, `Rss:`); 0 if unreadable.
pub fn rollup_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(6));
        assert_eq!(percentile(&v, 0.9), Duration::from_millis(9));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn unimplemented_is_recognised() {
        let e: BoxError = Box::new(tonic::Status::unimplemented("StartContainer"));
        assert_eq!(unimplemented(&e).as_deref(), Some("StartContainer"));
        let e: BoxError = Box::new(tonic::Status::not_found("x"));
        assert_eq!(unimplemented(&e), None);
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
