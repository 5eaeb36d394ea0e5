//! Issue 13 as the kubelet observes it: container events (evented PLEG) for
//! every subscriber, the CRI metrics (`/metrics/cadvisor` from the runtime),
//! the streaming list RPCs, UpdatePodSandboxResources, the configured stop
//! signal, and crid's own Prometheus endpoint.

use crid_e2e::pods::{sh, Node};
use crid_e2e::ImageBuilder;
use crid_proto::cri;
use crid_proto::cri::ContainerEventType as Ev;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Streaming;

type Events = Streaming<cri::ContainerEventResponse>;

async fn subscribe(n: &Node) -> Events {
    // Each subscriber on its own connection, as separate kubelets would be.
    n.crid
        .clients()
        .await
        .unwrap()
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn next(s: &mut Events) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("an event within 30s")
        .expect("the stream stays healthy")
        .expect("the stream stays open")
}

fn kind(e: &cri::ContainerEventResponse) -> Ev {
    Ev::try_from(e.container_event_type).unwrap()
}

/// The status of container `id` in the event (None: not listed).
fn status_in<'a>(e: &'a cri::ContainerEventResponse, id: &str) -> Option<&'a cri::ContainerStatus> {
    e.containers_statuses.iter().find(|c| c.id == id)
}

/// The state of container `id` in the event's statuses (None: not listed).
fn state_in(e: &cri::ContainerEventResponse, id: &str) -> Option<cri::ContainerState> {
    status_in(e, id).map(|c| cri::ContainerState::try_from(c.state).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_see_a_containers_life_in_order_with_its_statuses() {
    let mut n = Node::start(vec![]).await;
    let mut a = subscribe(&n).await;
    let mut b = subscribe(&n).await;
    // A third subscriber that goes away early must not disturb the others.
    let mut gone = subscribe(&n).await;

    let pod_cfg = n.pod_config("events");
    let pod = n.run_pod(&pod_cfg).await;
    // The kubelet retrying a Run whose answer it lost: same pod, no second event.
    assert_eq!(n.run_pod(&pod_cfg).await, pod);
    let first = next(&mut gone).await;
    assert_eq!(
        (kind(&first), first.container_id.as_str()),
        (Ev::ContainerStartedEvent, pod.as_str())
    );
    drop(gone);

    let id = n
        .create(&pod, &pod_cfg, sh("worker", &n.image, "exec sleep 1000"))
        .await
        .unwrap();
    n.start_container(&id).await.unwrap();
    n.stop_container(&id, 10).await.unwrap();
    n.c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    n.stop_remove_pod(&pod).await;

    let expected = [
        (Ev::ContainerStartedEvent, pod.as_str()),
        (Ev::ContainerCreatedEvent, id.as_str()),
        (Ev::ContainerStartedEvent, id.as_str()),
        (Ev::ContainerStoppedEvent, id.as_str()),
        (Ev::ContainerDeletedEvent, id.as_str()),
        (Ev::ContainerStoppedEvent, pod.as_str()),
        (Ev::ContainerDeletedEvent, pod.as_str()),
    ];
    let mut seen = Vec::new();
    for s in [&mut a, &mut b] {
        let mut evs = Vec::new();
        for _ in &expected {
            evs.push(next(s).await);
        }
        let got: Vec<(Ev, &str)> = evs
            .iter()
            .map(|e| (kind(e), e.container_id.as_str()))
            .collect();
        assert_eq!(
            got, expected,
            "every subscriber sees the whole life, in order"
        );
        // Nothing twice, nothing more.
        let extra = tokio::time::timeout(Duration::from_millis(500), s.message()).await;
        assert!(extra.is_err(), "unexpected extra event: {extra:?}");
        seen.push(evs);
    }
    assert_eq!(seen[0], seen[1], "both subscribers got the same events");

    let evs = &seen[0];
    let mut last_ts = 0;
    for e in evs {
        // Every event names the pod, which the kubelet keys its cache by.
        let ps = e.pod_sandbox_status.as_ref().expect("pod sandbox status");
        assert_eq!(ps.id, pod);
        assert_eq!(ps.metadata.as_ref().unwrap().uid, "uid-events");
        assert!(e.created_at >= last_ts, "timestamps go forward");
        last_ts = e.created_at;
    }
    let ready = cri::PodSandboxState::SandboxReady as i32;
    assert_eq!(evs[0].pod_sandbox_status.as_ref().unwrap().state, ready);
    assert!(evs[0].containers_statuses.is_empty());
    assert_eq!(
        state_in(&evs[1], &id),
        Some(cri::ContainerState::ContainerCreated)
    );
    assert_eq!(
        state_in(&evs[2], &id),
        Some(cri::ContainerState::ContainerRunning)
    );
    let running = status_in(&evs[2], &id).unwrap();
    assert!(running.started_at > 0);
    assert_eq!(
        state_in(&evs[3], &id),
        Some(cri::ContainerState::ContainerExited)
    );
    let exited = status_in(&evs[3], &id).unwrap();
    // sleep killed by SIGTERM.
    assert_eq!((exited.exit_code, exited.reason.as_str()), (143, "Error"));
    assert!(exited.finished_at >= running.started_at);
    assert_eq!(
        state_in(&evs[4], &id),
        None,
        "a deleted container is not listed"
    );
    assert_ne!(evs[5].pod_sandbox_status.as_ref().unwrap().state, ready);
    assert_ne!(evs[6].pod_sandbox_status.as_ref().unwrap().state, ready);
    n.assert_no_containerd_objects();

    // Stopping crid ends the subscriptions instead of waiting out the
    // shutdown grace period (5 s) for streams that never end.
    let t = Instant::now();
    let exit = tokio::task::block_in_place(|| n.crid.stop());
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "crid took {:?} to stop",
        t.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), a.message()).await;
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_exiting_by_itself_is_reported_stopped() {
    let mut n = Node::start(vec![]).await;
    let mut s = subscribe(&n).await;
    let pod_cfg = n.pod_config("events-exit");
    let pod = n.run_pod(&pod_cfg).await;
    let id = n.run(&pod, &pod_cfg, sh("quick", &n.image, "exit 3")).await;
    let kinds: Vec<(Ev, String)> = [next(&mut s).await, next(&mut s).await, next(&mut s).await]
        .iter()
        .map(|e| (kind(e), e.container_id.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Ev::ContainerStartedEvent, pod.clone()),
            (Ev::ContainerCreatedEvent, id.clone()),
            (Ev::ContainerStartedEvent, id.clone()),
        ]
    );
    // The exit comes from containerd's event stream, not from an RPC.
    let e = next(&mut s).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (Ev::ContainerStoppedEvent, id.as_str())
    );
    let st = e.containers_statuses.iter().find(|c| c.id == id).unwrap();
    assert_eq!(st.exit_code, 3);
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_whose_helper_cannot_be_restarted_is_reported_stopped() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("events-broken");
    let pod = n.run_pod(&pod_cfg).await;
    let mut s = subscribe(&n).await;
    let info = n.pod_info(&pod).await;
    let ns_dir = std::path::PathBuf::from(info["nsDir"].as_str().unwrap());
    let helper = info["helperPid"].as_i64().unwrap() as i32;
    // The pod's IPC namespace pin goes away behind crid's back, then its
    // helper dies: crid cannot re-adopt the namespaces.
    nix::mount::umount2(&ns_dir.join("ipc"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let e = next(&mut s).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (Ev::ContainerStoppedEvent, pod.as_str())
    );
    let ps = e.pod_sandbox_status.unwrap();
    assert_eq!(ps.state, cri::PodSandboxState::SandboxNotready as i32);
    // The kubelet then stops and removes it as usual.
    n.stop_remove_pod(&pod).await;
    let e = next(&mut s).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (Ev::ContainerDeletedEvent, pod.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configured_stop_signal_is_sent_and_reported() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("stopsig");
    let pod = n.run_pod(&pod_cfg).await;
    let out = n.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg = sh(
        "trapper",
        &n.image,
        "trap 'echo INT > /out/got; exit 0' INT; trap 'echo TERM > /out/got; exit 1' TERM; \
         echo ready; while true; do sleep 0.1; done",
    );
    cfg.mounts.push(cri::Mount {
        container_path: "/out".into(),
        host_path: out.display().to_string(),
        ..Default::default()
    });
    cfg.stop_signal = cri::Signal::Sigint as i32;
    let id = n.run(&pod, &pod_cfg, cfg).await;
    n.wait_logged("stopsig", "trapper", "ready", Duration::from_secs(30))
        .await;

    let st = n.status(&id).await.unwrap();
    assert_eq!(st.stop_signal, cri::Signal::Sigint as i32);
    // image_id is what PullImage/ImageStatus call the image's id.
    let img = n.image_status(&n.image.clone()).await;
    assert_eq!(st.image_id, img.id);
    let listed = n.list_containers().await;
    assert_eq!(listed[0].image_id, img.id, "Container.image_id too");

    let t = Instant::now();
    n.stop_container(&id, 20).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stopped by SIGINT, not SIGKILL after 20s"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("got")).unwrap().trim(),
        "INT"
    );
    let st = n.status(&id).await.unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // Without one, the runtime default is SIGTERM and that is what is reported.
    let plain = n
        .run(&pod, &pod_cfg, sh("plain", &n.image, "exec sleep 1000"))
        .await;
    assert_eq!(
        n.status(&plain).await.unwrap().stop_signal,
        cri::Signal::Sigterm as i32
    );
    n.stop_remove_pod(&pod).await;
}

fn labels<'a>(
    d: &'a HashMap<String, Vec<String>>,
    m: &'a cri::Metric,
) -> HashMap<&'a str, &'a str> {
    let keys = &d[&m.name];
    assert_eq!(
        keys.len(),
        m.label_values.len(),
        "{}: one value per label key",
        m.name
    );
    keys.iter()
        .map(String::as_str)
        .zip(m.label_values.iter().map(String::as_str))
        .collect()
}

/// The `device` label of the container's writable-layer usage.
fn l_device(ms: &[cri::Metric], descs: &HashMap<String, Vec<String>>) -> String {
    let m = ms
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .expect("container_fs_usage_bytes");
    labels(descs, m)["device"].to_string()
}

fn value(m: &cri::Metric) -> u64 {
    m.value.as_ref().map(|v| v.value).expect("a value")
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_metrics_streamed_lists_and_pod_resources() {
    let (mut n, net) = Node::start_with_net(237).await;
    let pod_cfg = n.pod_config_with_netns("metrics");
    let pod = n.run_pod(&pod_cfg).await;
    let mut cfg = sh(
        "burner",
        &n.image,
        // 8 MB in the pod's /dev/shm (tmpfs: charged to the container and
        // never inactive file cache, so in the working set), some CPU, idle.
        "head -c 8000000 /dev/zero > /dev/shm/fill; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
         echo done; exec sleep 1000",
    );
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            cpu_period: 100_000,
            cpu_quota: 150_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = n.run(&pod, &pod_cfg, cfg).await;
    n.wait_logged("metrics", "burner", "done", Duration::from_secs(60))
        .await;

    let descs = n.metric_descriptors().await;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_spec_memory_limit_bytes",
        "container_network_receive_bytes_total",
        "container_start_time_seconds",
    ] {
        assert!(descs.contains_key(name), "{name} not described");
    }

    let all = n.pod_metrics().await;
    assert_eq!(all.len(), 1);
    let pm = &all[0];
    assert_eq!(pm.pod_sandbox_id, pod);
    // Pod level: the pod cgroup's CPU and memory, the pod's eth0.
    let find = |ms: &'_ [cri::Metric], name: &str| -> cri::Metric {
        ms.iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let ws = find(&pm.metrics, "container_memory_working_set_bytes");
    let l = labels(&descs, &ws);
    assert_eq!(l["name"], pod);
    assert_eq!(
        (l["pod"], l["namespace"], l["container"]),
        ("metrics", "default", "")
    );
    assert!(l["id"].ends_with(&pod), "pod cgroup as id: {}", l["id"]);
    let ctr_ws_min = 8_000_000;
    assert!(value(&ws) >= ctr_ws_min, "pod working set {}", value(&ws));
    assert!(pm
        .metrics
        .iter()
        .any(|m| m.name == "container_cpu_usage_seconds_total"));
    let rx = pm
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && labels(&descs, m)["interface"] == "eth0"
        })
        .expect("eth0 receive bytes");
    assert_eq!(rx.metric_type, cri::MetricType::Counter as i32);
    assert!(value(&find(&pm.metrics, "container_processes")) >= 2);

    // Container level.
    assert_eq!(pm.container_metrics.len(), 1);
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, id);
    let ws = find(&cm.metrics, "container_memory_working_set_bytes");
    let l = labels(&descs, &ws);
    assert_eq!(
        (l["name"], l["container"], l["image"]),
        (id.as_str(), "burner", n.image.as_str())
    );
    assert_eq!((l["pod"], l["namespace"]), ("metrics", "default"));
    assert!(
        value(&ws) >= ctr_ws_min,
        "container working set {}",
        value(&ws)
    );
    assert_eq!(ws.metric_type, cri::MetricType::Gauge as i32);
    assert_eq!(
        value(&find(&cm.metrics, "container_spec_memory_limit_bytes")),
        256 << 20
    );
    assert_eq!(
        value(&find(&cm.metrics, "container_spec_cpu_quota")),
        150_000
    );
    let cpu = find(&cm.metrics, "container_cpu_usage_seconds_total");
    assert_eq!(labels(&descs, &cpu)["cpu"], "total");
    assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = value(&find(&cm.metrics, "container_start_time_seconds"));
    assert!(
        started <= now && now - started < 120,
        "start time {started}, now {now}"
    );
    assert!(value(&find(&cm.metrics, "container_threads")) >= 1);
    assert!(
        value(&find(&cm.metrics, "container_file_descriptors")) >= 3,
        "stdio at least"
    );
    let limit = find(&cm.metrics, "container_fs_limit_bytes");
    assert!(value(&limit) > 0 && labels(&descs, &limit)["device"] == l_device(&cm.metrics, &descs));
    // Every described metric has a value somewhere in the pod (as the CRI
    // validation suite checks), with one value per label key; block I/O
    // only where the container did some, pressure and swap where the
    // kernel accounts them.
    let psi = std::path::Path::new("/proc/pressure/cpu").exists();
    for name in descs.keys() {
        let optional = name.starts_with("container_fs_reads")
            || name.starts_with("container_fs_writes")
            || name == "container_blkio_device_usage_total"
            || (!psi && name.starts_with("container_pressure_"))
            || name == "container_memory_swap";
        let present = pm
            .metrics
            .iter()
            .chain(&cm.metrics)
            .any(|m| &m.name == name);
        assert!(present || optional, "{name} described but not reported");
    }
    for m in pm.metrics.iter().chain(&cm.metrics) {
        labels(&descs, m);
    }

    // The streamed metrics hold the same pod.
    let mut st =
        n.c.runtime
            .stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner();
    let mut pods = Vec::new();
    while let Some(page) = st.message().await.unwrap() {
        assert!(!page.pod_sandbox_metrics.is_empty(), "no empty page");
        pods.extend(
            page.pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id),
        );
    }
    assert_eq!(pods, vec![pod.clone()]);

    // Streamed lists match the List RPCs.
    let listed: Vec<String> = n
        .list_containers()
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut s =
        n.c.runtime
            .stream_containers(cri::StreamContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    let mut streamed = Vec::new();
    while let Some(page) = s.message().await.unwrap() {
        streamed.extend(page.containers.into_iter().map(|c| c.id));
    }
    assert_eq!(streamed, listed);
    let mut s =
        n.c.runtime
            .stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    let page = s.message().await.unwrap().unwrap();
    assert_eq!(page.pod_sandboxes.len(), 1);
    assert!(
        s.message().await.unwrap().is_none(),
        "EOF after the last page"
    );
    let mut s =
        n.c.runtime
            .stream_container_stats(cri::StreamContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    let page = s.message().await.unwrap().unwrap();
    assert_eq!(page.container_stats[0].attributes.as_ref().unwrap().id, id);
    let mut s =
        n.c.runtime
            .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    let page = s.message().await.unwrap().unwrap();
    assert_eq!(
        page.pod_sandbox_stats[0].attributes.as_ref().unwrap().id,
        pod
    );
    // Pressure stall information where the kernel has it (the cgroup2
    // mount of the hybrid layout holds the pod's and container's cgroups),
    // swap where the memory cgroup accounts it.
    let linux = page.pod_sandbox_stats[0].linux.as_ref().unwrap();
    let ctr = &linux.containers[0];
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        let cpu_psi = linux.cpu.as_ref().and_then(|c| c.psi.as_ref());
        assert!(cpu_psi.and_then(|p| p.some.as_ref()).is_some(), "{linux:?}");
        assert!(linux.memory.as_ref().and_then(|m| m.psi.as_ref()).is_some());
        assert!(linux.io.as_ref().and_then(|i| i.psi.as_ref()).is_some());
        assert!(
            ctr.io.as_ref().and_then(|i| i.psi.as_ref()).is_some(),
            "{ctr:?}"
        );
    }
    let swap_accounted = std::fs::read_dir("/sys/fs/cgroup/memory").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name() == "memory.memsw.usage_in_bytes")
    });
    if swap_accounted {
        let swap = ctr.swap.as_ref().expect("swap usage");
        assert!(swap.swap_usage_bytes.is_some(), "{swap:?}");
    }
    let mut s =
        n.c.image
            .stream_images(cri::StreamImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    let page = s.message().await.unwrap().unwrap();
    assert!(page.images.iter().any(|i| i.repo_tags.contains(&n.image)));
    // A filter that matches nothing: no page at all.
    let mut s =
        n.c.runtime
            .stream_containers(cri::StreamContainersRequest {
                filter: Some(cri::ContainerFilter {
                    id: "ffffffff".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(s.message().await.unwrap().is_none());

    // UpdatePodSandboxResources: recorded; bad input refused.
    let res = cri::LinuxContainerResources {
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 512 << 20,
        ..Default::default()
    };
    let rt = n.c.runtime.clone();
    let update = |pod_sandbox_id: String, resources: cri::LinuxContainerResources| {
        let mut rt = rt.clone();
        async move {
            rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id,
                overhead: None,
                resources: Some(resources),
            })
            .await
        }
    };
    update(pod.clone(), res.clone()).await.unwrap();
    let info = n.pod_info(&pod).await;
    assert_eq!(
        info["podResources"]["resources"]["memory_limit_in_bytes"],
        512 << 20
    );
    let e = update("nope".into(), res.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = update(
        pod.clone(),
        cri::LinuxContainerResources {
            cpu_quota: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    n.stop_remove_pod(&pod).await;
    let after = n.pod_metrics().await;
    assert!(after.is_empty(), "a removed pod has no metrics");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
}

/// `GET path` on crid's metrics endpoint: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// The value of the sample line `series` (exact name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prometheus_endpoint_serves_rpc_histograms_on_loopback() {
    let port = crid_e2e::registry::free_port().unwrap();
    let mut n = Node::start_with_image(ImageBuilder::busybox().unwrap(), |c| {
        c.metrics.address = format!("127.0.0.1:{port}");
    })
    .await;
    for _ in 0..3 {
        n.c.runtime
            .version(cri::VersionRequest::default())
            .await
            .unwrap();
    }
    let e = n.status("no-such-container").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let (code, text) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("# TYPE crid_grpc_request_duration_seconds histogram"),
        "{text}"
    );
    let versions = sample(
        &text,
        "crid_grpc_request_duration_seconds_count{method=\"Version\"}",
    );
    // The harness's readiness probe calls Version too.
    assert!(versions.is_some_and(|v| v >= 3.0), "{versions:?}\n{text}");
    assert!(
        sample(
            &text,
            "crid_grpc_request_duration_seconds_bucket{le=\"+Inf\",method=\"Version\"}"
        ) == versions,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "crid_grpc_request_errors_total{method=\"ContainerStatus\",code=\"NotFound\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The pull the harness made.
    assert_eq!(
        sample(&text, "crid_image_pulls_total{result=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "crid_image_pull_bytes_total").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "crid_pod_helper_restarts_total"),
        Some(0.0),
        "{text}"
    );

    let (code, _) = tokio::task::spawn_blocking(move || http_get(port, "/other"))
        .await
        .unwrap();
    assert_eq!(code, 404);

    // A second crid asked for the same address does not start, and leaves
    // no socket behind.
    let mut cfg = n.crid.config.clone();
    let dir = n.dir.path().join("second");
    cfg.socket = dir.join("crid.sock");
    cfg.state_dir = dir.join("state");
    cfg.runtime_dir = dir.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("crid.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    let out = std::process::Command::new(crid_e2e::workspace_bin("crid"))
        .arg("--config")
        .arg(dir.join("crid.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("metrics endpoint") || log.contains("metrics endpoint"),
        "{err}{log}"
    );
    assert!(!cfg.socket.exists());
}

/// With the evented PLEG on, the kubelet takes a pod's container statuses
/// from PodSandboxStatus whenever its timestamp is set: every container of
/// the pod must be there, with its current state, and the timestamp must
/// not claim more than the statuses hold (found by a real kubelet, which
/// restarted every container of every pod without this).
#[tokio::test(flavor = "multi_thread")]
async fn pod_sandbox_status_lists_the_pods_containers_with_a_timestamp() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("sbstatus");
    let pod = n.run_pod(&pod_cfg).await;
    let status = |n: &mut Node| {
        let mut rt = n.c.runtime.clone();
        let pod = pod.clone();
        async move {
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let empty = status(&mut n).await;
    assert!(empty.timestamp > 0);
    assert!(empty.containers_statuses.is_empty());

    let running = n
        .create(&pod, &pod_cfg, sh("running", &n.image, "exec sleep 1000"))
        .await
        .unwrap();
    n.start_container(&running).await.unwrap();
    let created = n
        .create(&pod, &pod_cfg, sh("created", &n.image, "true"))
        .await
        .unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let r = status(&mut n).await;
    assert!(r.timestamp >= before, "taken when asked");
    let states: Vec<(String, i32)> = r
        .containers_statuses
        .iter()
        .map(|c| (c.id.clone(), c.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (
                created.clone(),
                cri::ContainerState::ContainerCreated as i32
            ),
            (
                running.clone(),
                cri::ContainerState::ContainerRunning as i32
            ),
        ],
        "newest first (the kubelet takes the first status of a name), current states"
    );
    // The same statuses ContainerStatus gives (what the kubelet would
    // otherwise ask for one by one).
    let direct = n.status(&running).await.unwrap();
    assert_eq!(r.containers_statuses[1], direct);

    n.stop_container(&running, 10).await.unwrap();
    let r = status(&mut n).await;
    assert_eq!(
        r.containers_statuses[1].state,
        cri::ContainerState::ContainerExited as i32
    );

    // A restarted container, as the kubelet makes one: the same name, the
    // next attempt. The running instance must come before the exited one.
    let mut again = sh("running", &n.image, "exec sleep 1000");
    again.metadata.as_mut().unwrap().attempt = 1;
    n.c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: created.clone(),
        })
        .await
        .unwrap();
    let second = n.create(&pod, &pod_cfg, again).await.unwrap();
    n.start_container(&second).await.unwrap();
    let r = status(&mut n).await;
    let order: Vec<(String, i32)> = r
        .containers_statuses
        .iter()
        .map(|c| (c.id.clone(), c.state))
        .collect();
    assert_eq!(
        order,
        vec![
            (second.clone(), cri::ContainerState::ContainerRunning as i32),
            (running.clone(), cri::ContainerState::ContainerExited as i32),
        ]
    );
    n.stop_remove_pod(&pod).await;
}
