//! Container and pod stats as the kubelet's CRI stats provider reads them:
//! CPU time and rate, memory working set, writable layer usage, process
//! count, and the filters of the list calls.

use crid_e2e::pods::{sh, val, wait_log_contains, Node};
use crid_proto::cri;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn container_and_pod_stats_reflect_what_the_container_does() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("stats");
    let pod = n.run_pod(&pod_cfg).await;
    let mut cfg = sh(
        "worker",
        &n.image,
        // 20 MiB in the writable layer, some CPU, then idle.
        "head -c 20971520 /dev/zero > /tmp/f; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; \
         echo done; exec sleep 1000",
    );
    cfg.labels.insert("app".into(), "stats".into());
    let id = n.run(&pod, &pod_cfg, cfg).await;
    let log = n.log_dir("stats").join("worker.log");
    wait_log_contains(&log, "done", Duration::from_secs(30)).await;

    let s = n.container_stats(&id).await;
    assert_eq!(s.attributes.as_ref().unwrap().id, id);
    let cpu = s.cpu.unwrap();
    assert!(val(&cpu.usage_core_nano_seconds) > 10_000_000, "{cpu:?}");
    let mem = s.memory.unwrap();
    assert!(val(&mem.working_set_bytes) > 0, "{mem:?}");
    assert!(val(&mem.usage_bytes) >= val(&mem.working_set_bytes));
    let wl = s.writable_layer.unwrap();
    assert!(val(&wl.used_bytes) >= 20 * 1024 * 1024, "{wl:?}");
    assert!(val(&wl.inodes_used) >= 1);
    // The writable layer is on the filesystem ImageFsInfo reports.
    let fs =
        n.c.image
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        wl.fs_id.unwrap().mountpoint,
        fs.image_filesystems[0].fs_id.as_ref().unwrap().mountpoint
    );

    // A second sample gives a CPU rate; the filters select.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = |filter: cri::ContainerStatsFilter| {
        let mut rt = n.c.runtime.clone();
        async move {
            rt.list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
        }
    };
    let all = list(Default::default()).await;
    assert_eq!(all.len(), 1);
    assert!(all[0].cpu.as_ref().unwrap().usage_nano_cores.is_some());
    let by_label = list(cri::ContainerStatsFilter {
        label_selector: [("app".to_string(), "stats".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label.len(), 1);
    let none = list(cri::ContainerStatsFilter {
        pod_sandbox_id: "ffff".into(),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());

    let p = n.pod_stats(&pod).await;
    let linux = p.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    // sleep + the pod helper + its PID-namespace init, at least.
    assert!(
        val(&linux.process.unwrap().process_count) >= 3,
        "process count"
    );
    assert!(val(&linux.memory.unwrap().working_set_bytes) >= val(&mem.working_set_bytes));
    // Host network: no pod network figures of its own.
    assert!(linux.network.is_none());

    // Unknown ids.
    let e =
        n.c.runtime
            .container_stats(cri::ContainerStatsRequest {
                container_id: "nope".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e =
        n.c.runtime
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: "nope".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    n.stop_remove_pod(&pod).await;
    // Stopped pods are not listed.
    assert!(n.list_pod_stats().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_network_stats_count_the_pods_traffic() {
    let (mut n, net) = Node::start_with_net(223).await;
    // The pod's own network namespace on the test bridge.
    let pod_cfg = n.pod_config_with_netns("stats-net");
    let pod = n.run_pod(&pod_cfg).await;
    let network = |s: cri::PodSandboxStats| {
        s.linux
            .unwrap()
            .network
            .expect("a pod with its own netns has network stats")
    };
    let before = network(n.pod_stats(&pod).await);
    let eth0 = before.default_interface.clone().unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(before.interfaces.iter().all(|i| i.name != "lo"));

    // 20 pings of 1000 bytes to the bridge (a test host on our own bridge).
    let id = n
        .run(
            &pod,
            &pod_cfg,
            sh(
                "pinger",
                &n.image,
                &format!("ping -c 20 -i 0.05 -s 1000 {}", net.gateway()),
            ),
        )
        .await;
    let s = n.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!(s.exit_code, 0, "ping failed: {s:?}");
    let after = network(n.pod_stats(&pod).await).default_interface.unwrap();
    let tx = val(&after.tx_bytes) - val(&eth0.tx_bytes);
    let rx = val(&after.rx_bytes) - val(&eth0.rx_bytes);
    assert!(tx >= 20 * 1000 && rx >= 20 * 1000, "tx {tx} rx {rx}");
    n.stop_remove_pod(&pod).await;
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
}
