//! Faults under load (issue 14): crid, a pod helper and containerd are
//! SIGKILLed while pods start, containers log and execs are in flight, then
//! restarted. Afterwards every pod and container that existed is listed with
//! the same id and its true state, logs resume without a lost line, calls cut
//! in flight leave nothing or objects that Remove cleans up, and once
//! everything is removed no process, mount, cgroup, IPAM entry or iptables
//! rule of the test is left. Also: torn state records are skipped at start.
//! Each test has its own CNI network (10.244.17N.0/24). The tests run with
//! the default runtime handler (the pod helper as shim); the helper kill
//! also with containerd's runc shim (`runc-v2`).

use crid_common::config::RUNC_V2_RUNTIME_HANDLER;
use crid_e2e::pods::sh;
use crid_e2e::pods::Node;
use crid_e2e::workload;
use crid_e2e::{mounts_under, pids_in_cgroup, pod_processes, wait_for};
use crid_proto::cri;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::time::Duration;

/// A container printing `tick<N>` every 20 ms, numbered from 0.
fn ticker(name: &str, image: &str) -> cri::ContainerConfig {
    sh(
        name,
        image,
        "i=0; while true; do echo tick$i; i=$((i+1)); usleep 20000; done",
    )
}

/// The `tickN` numbers of a CRI log file, in file order.
fn ticks(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    crid_e2e::pods::parse_cri_log(&text)
        .into_iter()
        .filter(|(_, tag, _)| tag == "F")
        .filter_map(|(_, _, line)| line.strip_prefix("tick").and_then(|n| n.parse().ok()))
        .collect()
}

/// Asserts the ticks are complete: 0..=last, in order, each once (except
/// at most one batch written again after a helper kill when `rewrite_ok`).
fn assert_no_tick_lost(path: &std::path::Path, rewrite_ok: bool) -> u64 {
    let got = ticks(path);
    let rewinds = (1..got.len()).filter(|&i| got[i] <= got[i - 1]).count();
    assert!(
        rewinds <= usize::from(rewrite_ok),
        "{rewinds} steps back in {}",
        path.display()
    );
    let mut once = got.clone();
    once.dedup_by(|b, a| b <= a);
    let last = *once.last().expect("some ticks logged");
    assert_eq!(
        once,
        (0..=last).collect::<Vec<_>>(),
        "ticks lost in {}",
        path.display()
    );
    last
}

/// Waits until the log at `path` has ticks beyond `after`.
async fn wait_ticks_beyond(path: &std::path::Path, after: u64) {
    let p = path.to_path_buf();
    wait_for(Duration::from_secs(30), || {
        let p = p.clone();
        async move { ticks(&p).iter().any(|&t| t > after).then_some(()) }
    })
    .await
    .unwrap_or_else(|| panic!("{} did not resume past tick{after}", path.display()));
}

/// Load while a fault strikes: new pods with a container started (calls
/// that the fault cuts), and execs into `targets`, until `stop` is set.
/// Returns the join handles; their results are ignored (cut calls fail).
fn start_load(
    n: &Node,
    targets: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    let mut tasks = Vec::new();
    for k in 0..2 {
        let mut c = n.c.clone();
        let stop = stop.clone();
        let image = n.image.clone();
        let logs = n.dir.path().join("logs");
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("load{k}-{i}");
                let cfg = crid_e2e::pods::host_network_pod(&logs, &name);
                if let Ok(pod) = workload::run_pod(&mut c, &cfg).await {
                    let _ = workload::create_and_start(
                        &mut c,
                        &pod,
                        &cfg,
                        &sh("c", &image, "sleep 1000"),
                    )
                    .await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for id in targets {
        let mut c = n.c.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = workload::exec_sync(
                    &mut c,
                    &id,
                    &["/bin/sh", "-c", "usleep 200000; echo x"],
                    10,
                )
                .await;
            }
        }));
    }
    tasks
}

async fn stop_load(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
}

/// The state a kubelet would see of the original pods and containers: each
/// listed with its id, pods ready, containers running (and running in
/// containerd too), exec answering.
async fn assert_originals_intact(n: &mut Node, pods: &[String], ctrs: &[String]) {
    let listed = n.list_pods().await;
    for p in pods {
        let pod = listed
            .iter()
            .find(|x| &x.id == p)
            .unwrap_or_else(|| panic!("pod {p} not listed: {listed:?}"));
        assert_eq!(
            pod.state,
            cri::PodSandboxState::SandboxReady as i32,
            "{pod:?}"
        );
    }
    let tasks = n.ctr(&["tasks", "ls"]);
    for c in ctrs {
        let s = n.status(c).await.unwrap();
        assert_eq!(
            s.state,
            cri::ContainerState::ContainerRunning as i32,
            "{s:?}"
        );
        assert!(
            tasks
                .lines()
                .any(|l| l.starts_with(c.as_str()) && l.contains("RUNNING")),
            "containerd's task of {c} is not running: {tasks}"
        );
        let r = workload::exec_sync(&mut n.c, c, &["/bin/echo", "alive"], 10)
            .await
            .unwrap();
        assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"alive\n"[..]));
    }
}

/// Every container crid lists is in the state containerd shows: CREATED
/// has no task, RUNNING a running one, EXITED none running.
async fn assert_listed_states_true(n: &Node) {
    let tasks = n.ctr(&["tasks", "ls"]);
    let task_of = |id: &str| {
        tasks
            .lines()
            .find(|l| l.starts_with(id))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
    };
    for c in n.list_containers().await {
        let t = task_of(&c.id);
        let ok = match cri::ContainerState::try_from(c.state) {
            Ok(cri::ContainerState::ContainerCreated) => t.is_none(),
            Ok(cri::ContainerState::ContainerRunning) => t.as_deref() == Some("RUNNING"),
            Ok(cri::ContainerState::ContainerExited) => t.as_deref() != Some("RUNNING"),
            _ => false,
        };
        assert!(
            ok,
            "container {} listed as {} but its task is {t:?}",
            c.id, c.state
        );
    }
}

/// Removes every pod crid lists (originals and whatever cut calls left),
/// then asserts nothing of the test is left: no pod or container listed or
/// in containerd, no pod process, no mount under the test dir, no pod
/// cgroup, no IPAM entry, no iptables rule of the test's subnet.
async fn remove_all_and_assert_no_leak(n: &mut Node, net: Option<(&crid_e2e::net::TestNet, u8)>) {
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let pods = n.list_pods().await;
        if pods.is_empty() {
            break;
        }
        for p in pods {
            seen.insert(p.id.clone());
            n.stop_pod(&p.id).await.unwrap();
            n.remove_pod(&p.id).await.unwrap();
        }
    }
    assert!(n.list_pods().await.is_empty());
    n.assert_no_container_left().await;
    let procs = wait_for(Duration::from_secs(10), || {
        let dir = n.dir.path().to_path_buf();
        async move {
            let p = pod_processes(&dir);
            p.is_empty().then_some(()).ok_or(p).ok()
        }
    })
    .await;
    assert!(
        procs.is_some(),
        "pod processes left: {:?}",
        pod_processes(n.dir.path())
    );
    let mounts = mounts_under(n.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    for id in &seen {
        let pids = pids_in_cgroup(&format!("crid/{id}"));
        assert!(
            pids.is_empty(),
            "processes left in pod {id}'s cgroup: {pids:?}"
        );
        for root in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let cg = root.path().join("crid").join(id);
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
    }
    if let Some((net, k)) = net {
        assert!(
            net.allocations().is_empty(),
            "IPAM entries left: {:?}",
            net.allocations()
        );
        let out = std::process::Command::new("iptables-save")
            .output()
            .expect("iptables-save");
        let rules = String::from_utf8_lossy(&out.stdout);
        let subnet = format!("10.244.{k}.");
        let left: Vec<&str> = rules.lines().filter(|l| l.contains(&subnet)).collect();
        assert!(left.is_empty(), "iptables rules left: {left:?}");
    }
}

/// Two CNI pods of runtime handler `handler`, each with a ticker, ready
/// for a fault.
async fn two_ticking_pods(
    n: &mut Node,
    handler: &str,
) -> (Vec<String>, Vec<String>, Vec<std::path::PathBuf>) {
    let mut pods = Vec::new();
    let mut ctrs = Vec::new();
    let mut logs = Vec::new();
    for name in ["fa", "fb"] {
        let cfg = n.pod_config_with_netns(name);
        let pod = n.run_pod_with(&cfg, handler).await;
        let c = n.run(&pod, &cfg, ticker("t", &n.image.clone())).await;
        let log = n.log_dir(name).join("t.log");
        pods.push(pod);
        ctrs.push(c);
        logs.push(log);
    }
    for l in &logs {
        wait_ticks_beyond(l, 5).await;
    }
    (pods, ctrs, logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn crid_sigkill_under_load_keeps_everything_and_leaks_nothing() {
    let (mut n, net) = Node::start_with_net(171).await;
    let (pods, ctrs, logs) = two_ticking_pods(&mut n, "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&n, ctrs.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    n.crid.kill();
    stop_load(load, stop).await;
    let before: Vec<u64> = logs.iter().map(|l| *ticks(l).last().unwrap()).collect();
    n.restart_crid().await;

    assert_originals_intact(&mut n, &pods, &ctrs).await;
    assert_listed_states_true(&n).await;
    for (l, b) in logs.iter().zip(&before) {
        wait_ticks_beyond(l, *b + 10).await;
        assert_no_tick_lost(l, false);
    }
    // Pods and containers the cut calls made are listed, and go with Remove.
    let listed = n.list_pods().await;
    eprintln!("crid SIGKILL: {} pods listed after restart", listed.len());
    remove_all_and_assert_no_leak(&mut n, Some((&net, 171))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helper_sigkill_under_load_keeps_everything_and_leaks_nothing() {
    // The default handler: the pod helper is the shim.
    helper_sigkill_under_load(172, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helper_sigkill_under_load_with_the_runc_v2_shim() {
    helper_sigkill_under_load(174, RUNC_V2_RUNTIME_HANDLER).await;
}

/// SIGKILLs the helper of one of two ticking pods (runtime handler
/// `handler`, network `k`) under load. The pod stays, with a new helper.
/// With containerd's runc shim its container keeps running and no tick is
/// lost; with the helper as shim containerd ends the container (exited
/// 137, its process gone), what it logged has no hole, and a new container
/// in the pod runs and logs. The other pod is untouched either way, and
/// nothing is left once everything is removed.
async fn helper_sigkill_under_load(k: u8, handler: &str) {
    let (mut n, net) = Node::start_with_net(k).await;
    let helper_shim = crid_e2e::helper_is_shim(&n.crid.config, handler);
    let (pods, ctrs, logs) = two_ticking_pods(&mut n, handler).await;
    let helper = n.helper_pid(&pods[0]).await;
    let cpid = n.container_info(&ctrs[0]).await["pid"]
        .as_u64()
        .expect("pid") as u32;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&n, ctrs.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(Pid::from_raw(helper as i32), Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_load(load, stop).await;
    // The supervisor has put a new helper in place.
    n.wait_helper_replaced(&pods[0], helper).await;
    assert_listed_states_true(&n).await;
    if helper_shim {
        let s = n.wait_exited(&ctrs[0], Duration::from_secs(30)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
        let gone = wait_for(Duration::from_secs(10), || async move {
            crid_e2e::parent_pid(cpid).is_none().then_some(())
        })
        .await;
        assert!(gone.is_some(), "container process {cpid} still there");
        let last = assert_no_tick_lost(&logs[0], true);
        // The pod is still ready and runs a new ticker, which logs.
        let listed = n.list_pods().await;
        assert!(
            listed
                .iter()
                .any(|p| p.id == pods[0] && p.state == cri::PodSandboxState::SandboxReady as i32),
            "{listed:?}"
        );
        let cfg = n.pod_config_with_netns("fa");
        let again = n.run(&pods[0], &cfg, ticker("t2", &n.image.clone())).await;
        let again_log = n.log_dir("fa").join("t2.log");
        wait_ticks_beyond(&again_log, 10).await;
        assert_no_tick_lost(&again_log, false);
        assert_originals_intact(&mut n, &pods, &[again, ctrs[1].clone()]).await;
        eprintln!("helper SIGKILL under load (helper shim): exited 137 after tick{last}");
    } else {
        assert_originals_intact(&mut n, &pods, &ctrs).await;
        let before = *ticks(&logs[0]).last().unwrap();
        wait_ticks_beyond(&logs[0], before + 10).await;
        let last = assert_no_tick_lost(&logs[0], true);
        eprintln!("helper SIGKILL under load: ticks 0..={last} all logged");
    }
    let before = *ticks(&logs[1]).last().unwrap();
    wait_ticks_beyond(&logs[1], before + 10).await;
    assert_no_tick_lost(&logs[1], false);
    remove_all_and_assert_no_leak(&mut n, Some((&net, k))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_sigkill_under_load_keeps_everything_and_leaks_nothing() {
    let (mut n, net) = Node::start_with_net(173).await;
    let (pods, ctrs, logs) = two_ticking_pods(&mut n, "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&n, ctrs.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    n.ctrd.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    n.ctrd.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_load(load, stop).await;
    let before: Vec<u64> = logs.iter().map(|l| *ticks(l).last().unwrap()).collect();
    assert_originals_intact(&mut n, &pods, &ctrs).await;
    assert_listed_states_true(&n).await;
    for (l, b) in logs.iter().zip(&before) {
        wait_ticks_beyond(l, *b + 10).await;
        assert_no_tick_lost(l, false);
    }
    // Exits are still seen after containerd's restart: a stop gives a true
    // exited state.
    n.stop_container(&ctrs[1], 2).await.unwrap();
    let s = n.status(&ctrs[1]).await.unwrap();
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    remove_all_and_assert_no_leak(&mut n, Some((&net, 173))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn torn_records_are_reported_and_skipped_at_start() {
    let mut n = Node::start(vec![]).await;
    let mut pods = Vec::new();
    for name in ["ta", "tb", "tc"] {
        let cfg = n.pod_config(name);
        let pod = n.run_pod(&cfg).await;
        let c = n
            .run(&pod, &cfg, sh("c", &n.image.clone(), "sleep 1000"))
            .await;
        pods.push((pod, c));
    }
    n.crid.stop();
    let state = n.crid.config.state_dir.clone();
    let rec = |kind: &str, id: &str| state.join(kind).join(format!("{id}.json"));
    // Pod tb's record torn in half, container of tc's record garbage.
    let torn_pod = rec("sandboxes", &pods[1].0);
    let torn_ctr = rec("containers", &pods[2].1);
    let pod_body = std::fs::read(&torn_pod).unwrap();
    let ctr_body = std::fs::read(&torn_ctr).unwrap();
    std::fs::write(&torn_pod, &pod_body[..pod_body.len() / 2]).unwrap();
    std::fs::write(&torn_ctr, [0xffu8, 0, 0x80, b'{']).unwrap();
    // And a temp file of a write cut by a crash.
    std::fs::write(state.join("sandboxes/.tmp-1-1-x.json"), "{").unwrap();

    n.restart_crid().await;
    let log = n.crid.log();
    assert!(
        log.contains("skipping unreadable sandbox record") && log.contains(&pods[1].0),
        "torn pod record not reported"
    );
    assert!(
        log.contains("skipping unreadable container record") && log.contains(&pods[2].1),
        "garbage container record not reported"
    );
    assert!(!state.join("sandboxes/.tmp-1-1-x.json").exists());
    let listed: BTreeSet<String> = n.list_pods().await.into_iter().map(|p| p.id).collect();
    assert!(
        listed.contains(&pods[0].0) && listed.contains(&pods[2].0),
        "{listed:?}"
    );
    assert!(!listed.contains(&pods[1].0));
    let ctrs: BTreeSet<String> = n
        .list_containers()
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        ctrs.contains(&pods[0].1) && ctrs.contains(&pods[1].1),
        "{ctrs:?}"
    );
    assert!(!ctrs.contains(&pods[2].1));
    let s = n.status(&pods[0].1).await.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);

    // Put the records back (an operator's repair): everything is whole again
    // and is cleaned up by the usual calls.
    n.crid.stop();
    std::fs::write(&torn_pod, &pod_body).unwrap();
    std::fs::write(&torn_ctr, &ctr_body).unwrap();
    n.restart_crid().await;
    assert_eq!(n.list_pods().await.len(), 3);
    assert_eq!(n.list_containers().await.len(), 3);
    // The container behind the damaged record was left alone meanwhile.
    for (_, c) in &pods {
        let s = n.status(c).await.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32, "{c}");
    }
    remove_all_and_assert_no_leak(&mut n, None).await;
}

/// A test that fails with a pod holding a host port leaves portmap's nat
/// rules behind (nobody runs CNI DEL): the TestNet guard removes them.
#[tokio::test(flavor = "multi_thread")]
async fn portmap_rules_of_a_failed_test_are_removed_by_the_net_guard() {
    let (mut n, net) = Node::start_with_net(175).await;
    let mut cfg = n.pod_config_with_netns("pm");
    cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18175,
        host_ip: String::new(),
    }];
    let _pod = n.run_pod(&cfg).await;
    let nat = || {
        let out = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("crid-test-175") || l.contains("10.244.175."))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(!nat().is_empty(), "portmap added no rule");
    // What a failing test's cleanup does: crid and the helpers die, no CNI DEL.
    n.crid.stop();
    crid_e2e::kill_leftover_pods(n.dir.path(), &n.crid.config.state_dir);
    assert!(!nat().is_empty(), "the rules outlive the pod's helper");
    drop(net);
    assert_eq!(nat(), Vec::<String>::new(), "rules left after the guard");
}
