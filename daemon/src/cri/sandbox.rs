//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox: CRI translation around [`crate::sandbox::Sandboxes`].

use super::Crid;
use crate::error::{Error, Result};
use crate::sandbox::record::{PodResources, SandboxRecord, SandboxState};
use crid_proto::cri;
use crid_proto::cri::ContainerEventType;
use std::collections::HashMap;
use std::sync::Arc;

/// Runs blocking sandbox work off the async threads; it completes (or rolls
/// back) even if the RPC is cancelled.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))?
}

/// `RunPodSandbox`.
pub async fn run(
    crid: &Crid,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse> {
    let ns = req
        .config
        .as_ref()
        .and_then(|c| c.linux.as_ref())
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    // A malformed request is refused as such before asking about support.
    if crate::userns::pod_userns(&ns)?.is_some() {
        crid.userns
            .check(&crid.containerd, &crid.config)
            .await
            .map_err(|why| {
                Error::FailedPrecondition(format!(
                    "user namespaces are not supported on this node: {why}"
                ))
            })?;
    }
    let sb = Arc::clone(&crid.sandboxes);
    let (id, created) = blocking(move || sb.run(req)).await?;
    if created && crid.nri.enabled() {
        nri_run(crid, &id).await?;
    }
    if created {
        super::events::sandbox(crid, &id, None, ContainerEventType::ContainerStartedEvent).await;
    }
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

/// Undoes a hidden sandbox if the RunPodSandbox call is dropped (the
/// client went away) during its NRI event.
struct HiddenGuard {
    sandboxes: Arc<crate::sandbox::Sandboxes>,
    id: String,
    armed: bool,
}

impl Drop for HiddenGuard {
    fn drop(&mut self) {
        if self.armed {
            let (sb, id) = (Arc::clone(&self.sandboxes), self.id.clone());
            tokio::task::spawn_blocking(move || sb.abort_run(&id));
        }
    }
}

/// NRI RunPodSandbox for a created, still hidden sandbox: published when
/// every plugin accepted it, undone when one failed it.
async fn nri_run(crid: &Crid, id: &str) -> Result<()> {
    let mut guard = HiddenGuard {
        sandboxes: Arc::clone(&crid.sandboxes),
        id: id.to_string(),
        armed: true,
    };
    // Held until the sandbox is visible (see crate::nri).
    let _sync = crid.nri.block_sync().await;
    let sb = Arc::clone(&crid.sandboxes);
    let key = id.to_string();
    let rec = blocking(move || {
        sb.peek_hidden(&key)
            .ok_or_else(|| Error::Internal(format!("sandbox {key} vanished while created")))
    })
    .await?;
    match crid.nri.run_pod_sandbox(&rec).await {
        Ok(()) => {
            guard.armed = false;
            crid.sandboxes.publish(id);
            Ok(())
        }
        Err(e) => {
            guard.armed = false;
            let sb = Arc::clone(&crid.sandboxes);
            let key = id.to_string();
            blocking(move || {
                sb.abort_run(&key);
                Ok(())
            })
            .await?;
            Err(e)
        }
    }
}

/// `StopPodSandbox`: idempotent; an unknown id succeeds (the CRI: "must
/// not return an error if all relevant resources have already been
/// reclaimed"; the kubelet retries stops after a restart). An empty or
/// ambiguous id prefix is InvalidArgument.
pub async fn stop(
    crid: &Crid,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse> {
    // The pod's containers die first (their shim leaves the pod's cgroup
    // once their tasks are deleted); then the pod itself is torn down.
    let sb = Arc::clone(&crid.sandboxes);
    let id = req.pod_sandbox_id.clone();
    let Some(rec) = blocking(move || sb.get(&id)).await? else {
        tracing::debug!(pod = %req.pod_sandbox_id, "StopPodSandbox of an unknown pod: nothing to do");
        return Ok(cri::StopPodSandboxResponse {});
    };
    // Waits for container work in the pod and keeps new work out.
    let _pod = crid.pod_locks.exclusive(&rec.id).await;
    super::container_lifecycle::stop_of_sandbox(crid, &rec.id).await?;
    // NRI StopPodSandbox once per pod: its containers are stopped, the pod
    // is still there; a repeated stop (already torn down) sends none.
    if !rec.torn_down {
        crid.nri.stop_pod_sandbox(&rec).await;
    }
    let sb = Arc::clone(&crid.sandboxes);
    let (id, was_ready) = (rec.id.clone(), rec.is_ready());
    blocking(move || sb.stop(&rec.id)).await?;
    if was_ready {
        super::events::sandbox(crid, &id, None, ContainerEventType::ContainerStoppedEvent).await;
    }
    Ok(cri::StopPodSandboxResponse {})
}

/// `RemovePodSandbox`: idempotent like [`stop`] (unknown id: success).
pub async fn remove(
    crid: &Crid,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse> {
    let sb = Arc::clone(&crid.sandboxes);
    let id = req.pod_sandbox_id.clone();
    let Some(rec) = blocking(move || sb.get(&id)).await? else {
        return Ok(cri::RemovePodSandboxResponse {});
    };
    let _pod = crid.pod_locks.exclusive(&rec.id).await;
    // The pod's containers go first: their containerd containers and
    // snapshots must not outlive the pod.
    super::container::remove_of_sandbox(crid, &rec.id).await?;
    let sb = Arc::clone(&crid.sandboxes);
    let id = rec.id.clone();
    blocking(move || sb.remove(&id)).await?;
    crid.nri.remove_pod_sandbox(&rec).await;
    crid.pod_locks.forget(&rec.id);
    crid.streaming.forget_pod(&rec.id);
    let id = rec.id.clone();
    let mut gone = rec;
    gone.state = SandboxState::NotReady("removed".into());
    super::events::sandbox(
        crid,
        &id,
        Some(gone),
        ContainerEventType::ContainerDeletedEvent,
    )
    .await;
    Ok(cri::RemovePodSandboxResponse {})
}

/// `UpdatePodSandboxResources`: the kubelet has already resized the pod's
/// cgroup (it owns pod-level cgroups); crid checks the values and records
/// them (PodSandboxStatus verbose info shows them). Unknown pod → NotFound.
pub async fn update_resources(
    crid: &Crid,
    req: cri::UpdatePodSandboxResourcesRequest,
) -> Result<cri::UpdatePodSandboxResourcesResponse> {
    for r in [&req.overhead, &req.resources].into_iter().flatten() {
        crate::container::update::validate(r)?;
    }
    let sb = Arc::clone(&crid.sandboxes);
    let res = PodResources {
        overhead: req.overhead,
        resources: req.resources,
    };
    let id = req.pod_sandbox_id;
    tracing::Span::current().record("pod", id.as_str());
    blocking(move || sb.set_pod_resources(&id, res)).await?;
    Ok(cri::UpdatePodSandboxResourcesResponse {})
}

fn state(r: &SandboxRecord) -> cri::PodSandboxState {
    if r.state == SandboxState::Ready {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

fn metadata(r: &SandboxRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: r.name.clone(),
        uid: r.uid.clone(),
        namespace: r.namespace.clone(),
        attempt: r.attempt,
    }
}

/// `PodSandboxStatus`: an unknown id is NotFound (the CRI: "If the
/// PodSandbox is not present, returns an error").
pub async fn status(
    crid: &Crid,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse> {
    // Taken before anything is read: the kubelet's evented PLEG keeps the
    // newer of this answer and a container event by these timestamps, so
    // the statuses below must be at least as new as the timestamp says.
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    // Reading a record waits for an operation in progress on it (blocking).
    let sb = Arc::clone(&crid.sandboxes);
    let id = req.pod_sandbox_id.clone();
    let r = blocking(move || {
        sb.get(&id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))
    })
    .await?;
    tracing::Span::current().record("pod", r.id.as_str());
    let mut info = HashMap::new();
    if req.verbose {
        let v = verbose_info(&crid.config, &r);
        info.insert("info".to_string(), v.to_string());
    }
    Ok(cri::PodSandboxStatusResponse {
        status: Some(status_of(&r)),
        info,
        // With a timestamp set, a kubelet running the evented PLEG takes the
        // pod's container statuses from here and nowhere else: an empty
        // list reads as "no containers", and it starts them all again.
        containers_statuses: super::events::container_statuses(crid, &r.id),
        timestamp,
    })
}

/// Verbose PodSandboxStatus `info`: the keys of containerd's CRI plugin
/// (crictl inspectp, and tools reading `info.pid` or
/// `info.runtimeSpec.linux.namespaces`), then crid's own. crid has no pause
/// container: `pid` is the pod helper's, which lives in the pod's network,
/// UTS and IPC namespaces (so `nsenter -t <pid> -n` enters the pod's
/// network), `image` and the snapshot keys are empty, and `runtimeSpec` is a
/// spec-shaped summary of the pod's namespaces and cgroup, not a spec that
/// ran.
fn verbose_info(config: &crid_common::config::Config, r: &SandboxRecord) -> serde_json::Value {
    use crate::spec::annotations as a;
    let helper_alive = r.helper_pid.is_some_and(crate::helper_client::helper_alive);
    let own = r.own_namespaces();
    let ns = r.ns_dir();
    let netns = own.net.then(|| ns.join("net"));
    let mut namespaces = Vec::new();
    for (kind, path) in [
        ("network", netns.clone()),
        ("uts", own.net.then(|| ns.join("uts"))),
        ("ipc", own.ipc.then(|| ns.join("ipc"))),
        (
            "pid",
            r.reaper_pid
                .filter(|_| own.pid)
                .map(|p| std::path::PathBuf::from(format!("/proc/{p}/ns/pid"))),
        ),
    ] {
        if let Some(path) = path {
            namespaces.push(serde_json::json!({"type": kind, "path": path}));
        }
    }
    let cgroups_path = crate::cri::container::pod_cgroup(r).ok();
    serde_json::json!({
        "pid": r.helper_pid.unwrap_or(0),
        "processStatus": if helper_alive { "running" } else { "stopped" },
        // Closed once the pin is gone (torn down); a host-network pod has none.
        "netNamespaceClosed": netns.as_ref().is_some_and(|p| !p.exists()),
        "image": "",
        "snapshotKey": "",
        "snapshotter": "",
        "runtimeHandler": r.runtime_handler,
        "runtimeType": crate::runtime_handler::pod_runtime_type(r),
        "runtimeOptions": crate::runtime_handler::pod_runtime_options(config, r),
        "config": r.config,
        "runtimeSpec": {
            "hostname": r.hostname,
            "annotations": {
                a::CONTAINER_TYPE: "sandbox",
                a::SANDBOX_ID: r.id,
                a::SANDBOX_NAME: r.name,
                a::SANDBOX_NAMESPACE: r.namespace,
                a::SANDBOX_UID: r.uid,
            },
            "linux": {
                "cgroupsPath": cgroups_path,
                "namespaces": namespaces,
            },
        },
        "cniResult": r.cni_result,
        "state": r.state,
        "helperPid": r.helper_pid,
            "reaperPid": r.reaper_pid,
            "cgroups": r.cgroups.leaves,
            "netns": r.cni.as_ref().map(|c| c.netns.clone()),
            "nsDir": r.ns_dir(),
            "sandboxDir": r.dir,
            "cniResult": r.cni_result,
            "cniConfig": r.cni.as_ref().map(|c| c.file.clone()),
            "podResources": r.pod_resources,
    })
}

/// The CRI status of a sandbox record (PodSandboxStatus, container events).
pub fn status_of(r: &SandboxRecord) -> cri::PodSandboxStatus {
    let network = r.ips.first().map(|ip| cri::PodSandboxNetworkStatus {
        ip: ip.clone(),
        additional_ips: r.ips[1..]
            .iter()
            .map(|ip| cri::PodIp { ip: ip.clone() })
            .collect(),
    });
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(metadata(r)),
        state: state(r) as i32,
        created_at: r.created_at,
        network,
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: r.namespace_modes.network,
                    pid: r.namespace_modes.pid,
                    ipc: r.namespace_modes.ipc,
                    userns_options: Some(crate::userns::to_cri(r.user_namespace.as_ref())),
                    ..Default::default()
                }),
            }),
        }),
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// `ListPodSandbox` with the id-prefix, state and label-selector filters.
pub async fn list(
    crid: &Crid,
    req: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse> {
    let filter = req.filter.unwrap_or_default();
    let sb = Arc::clone(&crid.sandboxes);
    let all = blocking(move || Ok(sb.all())).await?;
    let mut items: Vec<cri::PodSandbox> = all
        .into_iter()
        .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
        .filter(|r| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state(r) as i32)
        })
        .filter(|r| {
            filter
                .label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
        })
        .map(|r| cri::PodSandbox {
            id: r.id.clone(),
            metadata: Some(metadata(&r)),
            state: state(&r) as i32,
            created_at: r.created_at,
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
            runtime_handler: r.runtime_handler.clone(),
        })
        .collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    Ok(cri::ListPodSandboxResponse { items })
}
