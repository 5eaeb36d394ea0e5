//! Pods whose helper is their containerd shim (runtime handler of type
//! `io.containerd.crid.v1`): containers run, log, exec and stop with the
//! right codes through the helper, no runc shim process exists for the pod,
//! and the pod keeps working across a crid restart.

use crid_common::config::{RuntimeHandlerConfig, CRID_SHIM_RUNTIME_TYPE, DEFAULT_RUNTIME_HANDLER};
use crid_e2e::images::ImageBuilder;
use crid_e2e::pods::{parse_cri_log, sh, Node};
use crid_e2e::CridProcess;
use crid_proto::cri;
use std::time::Duration;

const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// A node with the default handler as it ships: `runc`, the helper shim
/// (also when CRID_TEST_RUNC_RUNTIME_TYPE sends the other suites to
/// containerd's runc shim).
async fn node() -> Node {
    Node::start_with_image(ImageBuilder::busybox().unwrap(), |c| {
        c.runtimes.insert(
            DEFAULT_RUNTIME_HANDLER.into(),
            RuntimeHandlerConfig {
                runtime_type: CRID_SHIM_RUNTIME_TYPE.into(),
                ..Default::default()
            },
        );
        assert_eq!(c.default_runtime, DEFAULT_RUNTIME_HANDLER);
    })
    .await
}

/// Processes whose command line mentions `needle` and `name`.
fn processes_with(name: &str, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(name) && cmd.contains(needle) {
            found.push(cmd);
        }
    }
    found
}

async fn exec_sync(n: &mut Node, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
    n.c.runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_run_log_exec_and_stop_through_the_helper() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("shim-basic");
    let pod = n.run_pod(&pod_cfg).await;

    let ok = n
        .run(
            &pod,
            &pod_cfg,
            sh("echo", &n.image, "echo hello; echo oops >&2"),
        )
        .await;
    let s = n.wait_exited(&ok, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    let log_path = n.log_dir("shim-basic").join("echo.log");
    let log = crid_e2e::wait_for(Duration::from_secs(2), || {
        let p = log_path.clone();
        async move {
            let l = std::fs::read_to_string(p).unwrap_or_default();
            (l.lines().count() == 2).then_some(l)
        }
    })
    .await
    .expect("2 log lines");
    let entries = parse_cri_log(&log);
    assert!(
        entries.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{log}"
    );
    assert!(
        entries.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{log}"
    );

    let bad = n.run(&pod, &pod_cfg, sh("three", &n.image, "exit 3")).await;
    let s = n.wait_exited(&bad, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"), "{s:?}");

    let long = n
        .run(&pod, &pod_cfg, sh("long", &n.image, "exec sleep 1000"))
        .await;
    assert_eq!(n.status(&long).await.unwrap().state, RUNNING);
    let r = exec_sync(
        &mut n,
        &long,
        &["sh", "-c", "echo out; echo err >&2; exit 4"],
    )
    .await;
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 4)
    );

    // The task API's Stats, as containerd's clients see it: the
    // container's cgroup counters (one live process, memory in use).
    let metrics: serde_json::Value =
        serde_json::from_str(&n.ctr(&["tasks", "metrics", "--format", "json", &long]))
            .expect("ctr tasks metrics --format json");
    let (pids, memory) = if metrics["memory"]["usage"].is_object() {
        // cgroups v1 Metrics.
        (
            &metrics["pids"]["current"],
            &metrics["memory"]["usage"]["usage"],
        )
    } else {
        // cgroups v2 Metrics.
        (&metrics["pids"]["current"], &metrics["memory"]["usage"])
    };
    assert!(pids.as_u64().unwrap_or(0) >= 1, "{metrics}");
    assert!(memory.as_u64().unwrap_or(0) > 0, "{metrics}");

    // The helper is the shim: no runc shim serves this containerd.
    let address = n.ctrd.socket().display().to_string();
    assert_eq!(
        processes_with("containerd-shim-runc-v2", &address),
        Vec::<String>::new()
    );
    // The containers are children of the pod's helper (it reaps them).
    let info = n.container_info(&long).await;
    let pid = info["pid"].as_u64().expect("pid") as u32;
    let helper = n.helper_pid(&pod).await;
    assert_eq!(crid_e2e::parent_pid(pid), Some(helper));
    let parent = std::fs::read_to_string(format!("/proc/{helper}/comm")).unwrap();
    assert_eq!(parent.trim(), "crid-pod-helper");

    n.stop_container(&long, 5).await.unwrap();
    let s = n.status(&long).await.unwrap();
    assert_eq!((s.state, s.exit_code), (EXITED, 143), "{s:?}");

    // The test dir is too deep for a socket address: the shim socket is
    // under /run/crid-shim, and goes with the pod.
    let socket = std::path::PathBuf::from(format!("/run/crid-shim/{pod}.sock"));
    assert!(socket.exists(), "{}", socket.display());
    n.stop_remove_pod(&pod).await;
    assert!(!socket.exists(), "{} left behind", socket.display());
    n.assert_no_container_left().await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_keeps_working_across_a_crid_restart() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("shim-restart");
    let pod = n.run_pod(&pod_cfg).await;
    let long = n
        .run(&pod, &pod_cfg, sh("long", &n.image, "exec sleep 1000"))
        .await;

    n.crid.stop();
    let config = n.crid.config.clone();
    n.crid = CridProcess::start(config).await.unwrap();
    n.c = n.crid.clients().await.unwrap();

    assert_eq!(n.status(&long).await.unwrap().state, RUNNING);
    let r = exec_sync(&mut n, &long, &["echo", "still here"]).await;
    assert_eq!(
        (r.stdout.as_slice(), r.exit_code),
        (&b"still here\n"[..], 0)
    );
    let again = n.run(&pod, &pod_cfg, sh("again", &n.image, "exit 5")).await;
    let s = n.wait_exited(&again, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 5, "{s:?}");
    n.stop_container(&long, 5).await.unwrap();
    assert_eq!(n.status(&long).await.unwrap().exit_code, 143);
    n.stop_remove_pod(&pod).await;
    n.assert_no_container_left().await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_is_reported_by_the_helper() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("shim-oom");
    let pod = n.run_pod(&pod_cfg).await;
    // busybox dd allocates its 64 MiB block: far over the 16 MiB limit.
    let mut cfg = sh(
        "hog",
        &n.image,
        "exec dd if=/dev/zero of=/dev/null bs=64M count=4",
    );
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = n.run(&pod, &pod_cfg, cfg).await;
    let s = n.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "{s:?}"
    );
    n.stop_remove_pod(&pod).await;
    n.assert_no_container_left().await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_helper_ends_its_containers_and_is_replaced() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("shim-kill");
    let pod = n.run_pod(&pod_cfg).await;
    let long = n
        .run(&pod, &pod_cfg, sh("long", &n.image, "exec sleep 1000"))
        .await;
    let info = n.pod_info(&pod).await;
    let helper = info["helperPid"].as_u64().expect("helperPid") as i32;
    let cpid = n.container_info(&long).await["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd cleans up after the dead shim (`containerd-shim-crid-v1
    // delete`): the container is killed and reported exited.
    let s = n.wait_exited(&long, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 137, "{s:?}");
    let gone = crid_e2e::wait_for(Duration::from_secs(10), || async move {
        let stat = std::fs::read_to_string(format!("/proc/{cpid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for the node's init.
        (stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')))
        .then_some(())
    })
    .await;
    assert!(gone.is_some(), "container process {cpid} still running");
    // crid replaces the helper, and the pod runs new containers.
    let replaced = crid_e2e::wait_for(Duration::from_secs(5), || {
        let mut c = n.c.runtime.clone();
        let pod = pod.clone();
        async move {
            let r = c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: pod,
                    verbose: true,
                })
                .await
                .ok()?
                .into_inner();
            let info: serde_json::Value = serde_json::from_str(r.info.get("info")?).ok()?;
            let pid = info["helperPid"].as_u64()?;
            (pid as i32 != helper).then_some(pid)
        }
    })
    .await;
    assert!(
        replaced.is_some(),
        "helper not replaced; log:\n{}",
        n.crid.log()
    );
    let again = n.run(&pod, &pod_cfg, sh("again", &n.image, "exit 6")).await;
    let s = n.wait_exited(&again, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 6, "{s:?}");
    n.stop_remove_pod(&pod).await;
    n.assert_no_container_left().await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_keeps_working_across_a_containerd_restart() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("shim-ctrd");
    let pod = n.run_pod(&pod_cfg).await;
    let long = n
        .run(&pod, &pod_cfg, sh("long", &n.image, "exec sleep 1000"))
        .await;
    let pid = n.container_info(&long).await["pid"].as_u64().expect("pid");

    // containerd goes away and comes back: it finds the helper again through
    // the bundle's address file.
    n.ctrd.stop();
    n.ctrd = crid_e2e::PrivateContainerd::start(&n.dir.path().join("containerd"))
        .await
        .unwrap();
    let tasks = crid_e2e::wait_for(Duration::from_secs(20), || {
        let out = n.ctr(&["tasks", "ls"]);
        let line = out
            .lines()
            .find(|l| l.starts_with(long.as_str()))
            .map(str::to_string);
        async move { line.filter(|l| l.contains("RUNNING")) }
    })
    .await;
    let line = tasks.unwrap_or_else(|| panic!("task not RUNNING: {}", n.ctr(&["tasks", "ls"])));
    assert!(line.contains(&pid.to_string()), "{line}");
    assert_eq!(n.status(&long).await.unwrap().state, RUNNING);
    let r = exec_sync(&mut n, &long, &["echo", "after"]).await;
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"after\n"[..], 0));
    n.stop_container(&long, 5).await.unwrap();
    let s = n.wait_exited(&long, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 143, "{s:?}");
    n.stop_remove_pod(&pod).await;
    n.assert_no_container_left().await;
    n.assert_no_containerd_objects();
}
