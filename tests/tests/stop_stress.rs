//! StopContainer under stress (issue 18), as the kubelet sees it: many pods,
//! each run → container(s) started → StopContainer → RemoveContainer →
//! StopPodSandbox → RemovePodSandbox, one after the other and four at once.
//! Every RPC must succeed and every stopped container must report the exit
//! code its process really had:
//!
//! - `term`: busybox `top`, which exits on SIGTERM → 143 (measured: it
//!   catches SIGTERM and ends with 128 + 15, also as PID 1 of its own PID
//!   namespace). It is the pod's only container in even iterations, so its
//!   task's end is also the end of the pod's runc shim.
//! - `stubborn` (odd iterations, same pod): ignores SIGTERM, so it is
//!   SIGKILLed after a 1 s stop timeout → 137. Stopped at the same time as
//!   `term`, as the kubelet stops a pod's containers in parallel.
//!
//! Each is stopped once its log shows it is ready for the signal. Pods
//! alternate between a PID namespace per container (the kubelet's default)
//! and one per pod. `CRID_STOP_STRESS_ITERATIONS` sets the number of pods
//! per test (default 200; in the concurrent test, shared by the four
//! workers).

use crid_e2e::pods::{host_network_pod, log_contains, sh, Node};
use crid_proto::cri;
use crid_proto::cri::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
/// The stop timeout of the SIGTERM-ignoring container (then SIGKILL).
const STUBBORN_TIMEOUT: i64 = 1;
/// The stop timeout of the container that dies of SIGTERM (never reached).
const TERM_TIMEOUT: i64 = 60;

fn iterations() -> usize {
    std::env::var("CRID_STOP_STRESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// What one worker needs to run pods without the `Node`.
#[derive(Clone)]
struct Ctx {
    rt: RuntimeServiceClient<Channel>,
    image: String,
    logs: PathBuf,
}

/// A host-network pod whose PID namespace mode is `pid`.
fn pod_config(logs: &Path, name: &str, pid: cri::NamespaceMode) -> cri::PodSandboxConfig {
    let mut cfg = host_network_pod(logs, name);
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|sc| sc.namespace_options.as_mut())
    {
        ns.pid = pid as i32;
    }
    cfg
}

/// A container to run: its config, the line it logs once it is ready for
/// the stop signal, its stop timeout and the exit code it must report.
struct Planned {
    cfg: cri::ContainerConfig,
    name: &'static str,
    ready: &'static str,
    timeout: i64,
    want: i32,
}

/// A started container.
struct Started {
    id: String,
    p: Planned,
}

/// One pod's whole life; returns what went wrong (empty: all as expected).
async fn cycle(mut c: Ctx, name: String, i: usize) -> Vec<String> {
    let mut errors = Vec::new();
    let stubborn = i % 2 == 1;
    let pid = if i % 4 < 2 {
        cri::NamespaceMode::Container
    } else {
        cri::NamespaceMode::Pod
    };
    let pod_cfg = pod_config(&c.logs, &name, pid);
    let pod = match c
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => return vec![format!("{name}: RunPodSandbox: {e:?}")],
    };

    let mut term = sh("term", &c.image, "");
    term.command = vec!["top".into()];
    // top's first screen: its SIGTERM handler is in place (as PID 1 of its
    // own namespace, an unhandled SIGTERM would be dropped by the kernel).
    let mut plan = vec![Planned {
        cfg: term,
        name: "term",
        ready: "Mem:",
        timeout: TERM_TIMEOUT,
        want: 143,
    }];
    if stubborn {
        // `ready` once SIGTERM is ignored: a stop before that would kill
        // the shell with 143.
        plan.push(Planned {
            cfg: sh(
                "stubborn",
                &c.image,
                "trap '' TERM; echo ready; exec sleep 1000",
            ),
            name: "stubborn",
            ready: "ready",
            timeout: STUBBORN_TIMEOUT,
            want: 137,
        });
    }
    let mut started = Vec::new();
    for mut p in plan {
        let cname = p.name;
        // As the kubelet: the container's PID namespace mode matches the pod's.
        let sc = p
            .cfg
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        sc.namespace_options = Some(cri::NamespaceOption {
            pid: pid as i32,
            ..Default::default()
        });
        let id = match c
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(p.cfg.clone()),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
        {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                errors.push(format!("{name}/{cname}: CreateContainer: {e:?}"));
                continue;
            }
        };
        if let Err(e) =
            c.rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            errors.push(format!("{name}/{cname}: StartContainer: {e:?}"));
        }
        started.push(Started { id, p });
    }
    for s in &started {
        let log = c.logs.join(&name).join(format!("{}.log", s.p.name));
        if !log_contains(&log, s.p.ready, Duration::from_secs(10)).await {
            errors.push(format!("{name}/{}: never logged {:?}", s.p.name, s.p.ready));
        }
    }

    // The kubelet stops a pod's containers in parallel.
    let stops = started.iter().map(|s| {
        let mut rt = c.rt.clone();
        let (id, timeout) = (s.id.clone(), s.p.timeout);
        async move {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout,
            })
            .await
        }
    });
    let results = futures_util::future::join_all(stops).await;
    for (s, r) in started.iter().zip(results) {
        if let Err(e) = r {
            errors.push(format!("{name}/{}: StopContainer: {e:?}", s.p.name));
        }
        match c
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: s.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(r) => {
                let st = r.into_inner().status.unwrap_or_default();
                if (st.state, st.exit_code) != (EXITED, s.p.want) {
                    errors.push(format!(
                        "{name}/{}: state {} exit {} reason {:?}, want exited {}",
                        s.p.name, st.state, st.exit_code, st.reason, s.p.want
                    ));
                }
            }
            Err(e) => errors.push(format!("{name}/{}: ContainerStatus: {e:?}", s.p.name)),
        }
        if let Err(e) =
            c.rt.remove_container(cri::RemoveContainerRequest {
                container_id: s.id.clone(),
            })
            .await
        {
            errors.push(format!("{name}/{}: RemoveContainer: {e:?}", s.p.name));
        }
    }
    if let Err(e) =
        c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
    {
        errors.push(format!("{name}: StopPodSandbox: {e:?}"));
    }
    if let Err(e) =
        c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
    {
        errors.push(format!("{name}: RemovePodSandbox: {e:?}"));
    }
    errors
}

/// Runs `iterations()` cycles on `workers` workers; asserts no error and
/// nothing left in crid or containerd.
async fn stress(label: &str, workers: usize) {
    let n = Node::start(vec![]).await;
    let total = iterations();
    let ctx = Ctx {
        rt: n.c.runtime.clone(),
        image: n.image.clone(),
        logs: n.dir.path().join("logs"),
    };
    let t = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let ctx = ctx.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let mut errors = Vec::new();
                for i in (w..total).step_by(workers) {
                    let name = format!("{label}-{i}");
                    errors.extend(cycle(ctx.clone(), name, i).await);
                }
                errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    let took = t.elapsed();
    println!(
        "stop stress {label}: {total} pods on {workers} worker(s) in {took:.1?}: {} errors",
        errors.len()
    );
    for e in errors.iter().take(20) {
        println!("  {e}");
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );

    let mut rt = ctx.rt.clone();
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let ctrs = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(pods.is_empty() && ctrs.is_empty(), "{pods:?} {ctrs:?}");
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_races_its_exit_sequentially() {
    stress("seq", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_races_its_exit_four_at_once() {
    stress("par", 4).await;
}
