//! Container lifecycle end to end, as the kubelet observes it: StartContainer
//! runs the task with its stdio in the pod helper's log, exits are reported
//! from containerd's events (reason, code, timestamps), StopContainer's
//! signal-then-kill, StopPodSandbox killing what still runs, and exits that
//! happen while crid is down reconciled when it comes back.

use crid_e2e::pods::{parse_cri_log, sh, wait_log_contains, Node};
use crid_e2e::CridProcess;
use crid_proto::cri;
use std::time::{Duration, Instant};

const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

#[tokio::test(flavor = "multi_thread")]
async fn containers_run_exit_and_log() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("lc-echo");
    let pod = n.run_pod(&pod_cfg).await;

    let ok = n
        .run(
            &pod,
            &pod_cfg,
            sh("echo", &n.image, "echo hello; echo oops >&2; echo bye"),
        )
        .await;
    let s = n.wait_exited(&ok, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 0);
    assert_eq!(s.reason, "Completed");
    assert!(
        s.created_at < s.started_at && s.started_at <= s.finished_at,
        "{s:?}"
    );
    let log_path = n.log_dir("lc-echo").join("echo.log");
    assert_eq!(s.log_path, log_path.display().to_string());
    // The helper flushes within 100 ms of a write.
    let log = crid_e2e::wait_for(Duration::from_secs(2), || {
        let p = log_path.clone();
        async move {
            let l = std::fs::read_to_string(p).unwrap_or_default();
            (l.lines().count() == 3).then_some(l)
        }
    })
    .await
    .expect("3 log lines");
    let entries = parse_cri_log(&log);
    let mut stdout: Vec<_> = entries
        .iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| e.2.as_str())
        .collect();
    stdout.sort();
    assert_eq!(stdout, ["bye", "hello"]);
    assert!(entries.contains(&("stderr".into(), "F".into(), "oops".into())));

    let bad = n.run(&pod, &pod_cfg, sh("three", &n.image, "exit 3")).await;
    let s = n.wait_exited(&bad, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));

    // A started container cannot be started again.
    let again = n.start_container(&bad).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_signals_then_kills_after_the_timeout() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("lc-stop");
    let pod = n.run_pod(&pod_cfg).await;

    let stubborn = n
        .run(
            &pod,
            &pod_cfg,
            sh(
                "stubborn",
                &n.image,
                "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done",
            ),
        )
        .await;
    let polite = n
        .run(
            &pod,
            &pod_cfg,
            sh("polite", &n.image, "echo ready; exec sleep 1000"),
        )
        .await;
    for id in [&stubborn, &polite] {
        assert_eq!(n.status(id).await.unwrap().state, RUNNING);
    }
    // Verbose info names the task's pid: a live process on the host.
    let v = n.container_info(&polite).await;
    let pid = v["pid"].as_u64().expect("pid in verbose info");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    let log = n.log_dir("lc-stop").join("stubborn.log");
    wait_log_contains(&log, "ready", Duration::from_secs(5)).await;

    let t = Instant::now();
    n.stop_container(&stubborn, 2).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let s = n.status(&stubborn).await.unwrap();
    assert_eq!((s.state, s.exit_code), (EXITED, 137), "{s:?}");
    // It saw the TERM first.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("got TERM"), "{text}");

    let t = Instant::now();
    n.stop_container(&polite, 30).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let s = n.status(&polite).await.unwrap();
    assert_eq!((s.state, s.exit_code), (EXITED, 128 + 15), "{s:?}");
    // Stopping a stopped container succeeds and changes nothing.
    n.stop_container(&polite, 0).await.unwrap();
    assert_eq!(n.status(&polite).await.unwrap(), s);
    // Unknown id: nothing to stop, so success (the CRI's idempotence;
    // more in tests/tests/idempotence.rs).
    n.stop_container("nope", 0).await.unwrap();

    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exits_while_crid_is_down_are_reconciled_and_pod_stop_kills() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("lc-recon");
    let pod = n.run_pod(&pod_cfg).await;
    let victim = n
        .run(&pod, &pod_cfg, sh("victim", &n.image, "exec sleep 1000"))
        .await;
    let survivor = n
        .run(&pod, &pod_cfg, sh("survivor", &n.image, "exec sleep 1000"))
        .await;

    // crid goes away; the victim dies meanwhile.
    n.crid.stop();
    n.ctr(&["tasks", "kill", "-s", "SIGKILL", &victim]);
    crid_e2e::wait_for(Duration::from_secs(10), || {
        let out = n.ctr(&["tasks", "ls"]);
        let stopped = out
            .lines()
            .any(|l| l.starts_with(victim.as_str()) && l.contains("STOPPED"));
        async move { stopped.then_some(()) }
    })
    .await
    .expect("victim stopped");
    let config = n.crid.config.clone();
    n.crid = CridProcess::start(config).await.unwrap();
    n.c = n.crid.clients().await.unwrap();

    let s = n.wait_exited(&victim, Duration::from_secs(10)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
    assert_eq!(n.status(&survivor).await.unwrap().state, RUNNING);

    // StopPodSandbox kills what the kubelet did not stop.
    n.c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let s = n.status(&survivor).await.unwrap();
    assert_eq!((s.state, s.exit_code), (EXITED, 137), "{s:?}");
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn create_racing_pod_removal_leaves_nothing_behind() {
    let mut n = Node::start(vec![]).await;
    for round in 0..5 {
        let name = format!("lc-race{round}");
        let pod_cfg = n.pod_config(&name);
        let pod = n.run_pod(&pod_cfg).await;
        let mut a = n.c.runtime.clone();
        let mut b = n.c.runtime.clone();
        let cfg = sh("racer", &n.image, "exec sleep 1000");
        let (p, pc) = (pod.clone(), pod_cfg.clone());
        let create = tokio::spawn(async move {
            let id = a
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: p,
                    config: Some(cfg),
                    sandbox_config: Some(pc),
                })
                .await?
                .into_inner()
                .container_id;
            a.start_container(cri::StartContainerRequest { container_id: id })
                .await
        });
        let p = pod.clone();
        let remove = tokio::spawn(async move {
            b.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: p.clone(),
            })
            .await?;
            b.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p })
                .await
        });
        remove.await.unwrap().unwrap();
        // Either side may win; a create that lost is refused cleanly.
        if let Err(e) = create.await.unwrap() {
            assert!(
                matches!(
                    e.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ),
                "{e:?}"
            );
        }
        // Whatever won, nothing of the pod or a container of it is left.
        let (ctrs, tasks) = n.ctrd_objects();
        let left = n.list_containers().await;
        if !left.is_empty() {
            // A container created after the removal would be an orphan.
            panic!("round {round}: containers outlived their pod: {left:?}");
        }
        assert!(
            ctrs.trim().is_empty() && tasks.trim().is_empty(),
            "{ctrs} {tasks}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exits_while_containerd_is_down_are_reconciled() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("lc-ctrd");
    let pod = n.run_pod(&pod_cfg).await;
    let id = n
        .run(&pod, &pod_cfg, sh("victim", &n.image, "exec sleep 1000"))
        .await;
    let pid = n.container_info(&id).await["pid"].as_u64().unwrap() as i32;

    // containerd goes away (crid stays); the container dies meanwhile.
    n.ctrd.stop();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    n.ctrd = crid_e2e::PrivateContainerd::start(&n.dir.path().join("containerd"))
        .await
        .unwrap();

    // crid resubscribes and reconciles on its own.
    let s = n.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}
