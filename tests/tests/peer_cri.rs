//! The benchmark peer (containerd's own CRI plugin in a private containerd)
//! comes up ready, runs a pod with a busybox container to completion
//! through the generic workload driver, and leaves nothing behind.

use crid_e2e::containerd_cri::push_pause_image;
use crid_e2e::images::ImageBuilder;
use crid_e2e::workload;
use crid_e2e::{mounts_under, test_dir, PeerOptions, PrivateCriContainerd, Registry};
use crid_proto::cri;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn peer_runs_a_pod_to_completion_and_cleans_up() {
    let reg = Registry::start(Default::default()).unwrap();
    push_pause_image(&reg.target()).unwrap();
    ImageBuilder::busybox()
        .unwrap()
        .build()
        .unwrap()
        .push(&reg.target(), "test/busybox", &["1"])
        .unwrap();
    let image = format!("{}/test/busybox:1", reg.host());
    let dir = test_dir();
    let cgroup_root = format!("/crid-peer-test-{}", std::process::id());
    let mut peer = PrivateCriContainerd::start(
        &dir.path().join("peer"),
        PeerOptions {
            registry: reg.host(),
            bridge: "crid-peer-t1".into(),
            subnet: "10.245.1.0/24".into(),
            cgroup_root: cgroup_root.clone(),
        },
    )
    .await
    .unwrap();
    let mut c = peer.clients().await.unwrap();

    // Status: both conditions true (the CNI config is in place before start).
    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    for cond in ["RuntimeReady", "NetworkReady"] {
        let found = st.conditions.iter().find(|x| x.r#type == cond);
        assert!(
            found.is_some_and(|x| x.status),
            "{cond} not true: {:?}",
            st.conditions
        );
    }

    workload::pull(&mut c, &image).await.unwrap();
    let log_dir = dir.path().join("logs/pod1");
    let pod_cfg = workload::pod_config("peer-pod1", &log_dir, &format!("{cgroup_root}/pod1"));
    let cfg = workload::container_config(
        "hello",
        &image,
        &["sh", "-c", "echo hello from peer; exit 3"],
        "hello.log",
    );
    let started = workload::start_pod(&mut c, &pod_cfg, &cfg).await.unwrap();
    // The pod got an IP from our subnet.
    let ps = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: started.pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = ps.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with("10.245.1."), "pod IP {ip:?}");
    assert_eq!(peer.ip_allocations(), vec![ip.clone()]);

    let st = workload::wait_state(
        &mut c,
        &started.container_id,
        cri::ContainerState::ContainerExited,
        Duration::from_millis(50),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 3);
    let log = std::fs::read_to_string(log_dir.join("hello.log")).unwrap();
    let line = log.lines().next().unwrap_or_default();
    assert!(
        line.ends_with(" stdout F hello from peer"),
        "CRI log line {line:?}"
    );
    // The pod's processes are in the cgroup parent we gave it.
    let pause_cgroup = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(cgroup_root.trim_start_matches('/'))
        .join("pod1");
    assert!(pause_cgroup.is_dir(), "{} missing", pause_cgroup.display());

    workload::remove_pod(&mut c, &started.pod_id).await.unwrap();
    assert!(peer.ip_allocations().is_empty(), "IP not released");
    drop(c);
    let left = peer.shutdown();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(peer.shim_pids().is_empty());
    assert!(mounts_under(dir.path()).is_empty());
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory")
            .join(cgroup_root.trim_start_matches('/'))
            .exists(),
        "cgroup parent left"
    );
    let link = std::process::Command::new("ip")
        .args(["link", "show", "crid-peer-t1"])
        .output()
        .unwrap();
    assert!(!link.status.success(), "bridge left");
}
