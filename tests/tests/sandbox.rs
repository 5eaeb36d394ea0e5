//! Pod sandboxes end to end: real crid-pod-helper processes, real CNI
//! (bridge + host-local + portmap from /usr/lib/cni), real cgroups and
//! namespaces. Each test has its own bridge name and subnet (10.244.N.0/24)
//! and a host-local dataDir under its temp dir, and removes its bridge.

use crid_e2e::net::TestNet;
use crid_e2e::{mounts_under, test_dir, wait_for, CridProcess, PrivateContainerd};
use crid_proto::cri;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An extra CNI plugin: its type and its script, given the test dir.
type ExtraPlugin<'a> = (&'a str, &'a dyn Fn(&Path) -> String);

/// One test's world, dropped in field order: crid, the bridge,
/// containerd, the directory.
struct Env {
    crid: CridProcess,
    net: TestNet,
    config: crid_common::config::Config,
    runtime_dir: PathBuf,
    _ctrd: PrivateContainerd,
    dir: tempfile::TempDir,
}

impl Drop for Env {
    /// A failed test may leave pods running: clean them up so later runs
    /// start clean. A passing test must have cleaned up itself (it asserts
    /// so), so nothing here hides a leak.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.crid.stop();
            crid_e2e::kill_leftover_pods(self.dir.path(), &self.config.state_dir);
        }
    }
}

impl Env {
    /// containerd, network N (with an extra plugin `(type, script given the
    /// test dir)`) and crid.
    async fn start(n: u8, extra: Option<ExtraPlugin<'_>>) -> Env {
        let dir = test_dir();
        let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
            .await
            .unwrap();
        let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
        let net = TestNet::new(n, &mut config, extra.map(|e| e.0));
        if let Some((name, script)) = extra {
            let plugin = config.cni.bin_dirs[0].join(name);
            std::fs::write(&plugin, script(dir.path())).unwrap();
            std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let crid = CridProcess::start(config.clone()).await.unwrap();
        Env {
            crid,
            net,
            runtime_dir: config.runtime_dir.clone(),
            config,
            _ctrd: ctrd,
            dir,
        }
    }
}

fn pod_config(name: &str, uid: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

async fn run(
    c: &mut crid_e2e::CriClients,
    config: cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(
    c: &mut crid_e2e::CriClients,
    id: &str,
) -> (cri::PodSandboxStatus, serde_json::Value) {
    let r = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    (r.status.unwrap(), info)
}

async fn stop_remove(c: &mut crid_e2e::CriClients, id: &str) {
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Waits until sandbox `id` is Ready with a live helper other than `old`.
async fn replaced_helper(
    c: &crid_e2e::CriClients,
    id: &str,
    old: u64,
    timeout: Duration,
) -> Option<u64> {
    wait_for(timeout, || {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            let (st, info) = status(&mut c, &id).await;
            let pid = info["helperPid"].as_u64()?;
            (pid != old && alive(pid) && st.state == cri::PodSandboxState::SandboxReady as i32)
                .then_some(pid)
        }
    })
    .await
}

/// Runs `f` on a thread that has joined the namespace pinned at `pin`.
fn in_ns<T: Send>(pin: &Path, kind: nix::sched::CloneFlags, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(pin).unwrap();
            nix::sched::setns(ns, kind).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// A TCP listener on `port` inside the pod whose pins are in `ns_dir`.
fn pod_listener(ns_dir: &Path, port: u16) -> TcpListener {
    in_ns(
        &ns_dir.join("net"),
        nix::sched::CloneFlags::CLONE_NEWNET,
        || TcpListener::bind(("0.0.0.0", port)).unwrap(),
    )
}

/// Nothing of sandbox `id` is left: no pins or mounts, no sandbox dir, no
/// cgroup dirs, no helper, no IP allocation.
fn assert_gone(runtime_dir: &Path, id: &str, helper_pid: u64, net: &TestNet) {
    assert!(
        mounts_under(runtime_dir).is_empty(),
        "{:?}",
        mounts_under(runtime_dir)
    );
    assert!(!runtime_dir.join("sandboxes").join(id).exists());
    for h in ["cpu", "memory", "pids", "systemd", "unified"] {
        let p = Path::new("/sys/fs/cgroup").join(h).join("crid").join(id);
        assert!(!p.exists(), "{} left", p.display());
    }
    assert!(!alive(helper_pid), "helper {helper_pid} still running");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_ips_reach_each_other_and_leave_nothing_behind() {
    let env = Env::start(41, None).await;
    let (net, runtime_dir) = (&env.net, env.runtime_dir.clone());
    let mut c = env.crid.clients().await.unwrap();

    let mut a_cfg = pod_config("pod-a", "uid-a");
    a_cfg
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "100".into());
    a_cfg
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("kernel.shmmni".into(), "2048".into());
    a_cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let a = run(&mut c, a_cfg.clone()).await.unwrap();
    let b = run(&mut c, pod_config("pod-b", "uid-b")).await.unwrap();
    assert_eq!(
        run(&mut c, a_cfg).await.unwrap(),
        a,
        "same name/uid/attempt gives the same id"
    );

    let (sa, ia) = status(&mut c, &a).await;
    let (sb, ib) = status(&mut c, &b).await;
    assert_eq!(sa.state, cri::PodSandboxState::SandboxReady as i32);
    let ip_a: Ipv4Addr = sa.network.as_ref().unwrap().ip.parse().unwrap();
    let ip_b: Ipv4Addr = sb.network.as_ref().unwrap().ip.parse().unwrap();
    assert_eq!(ip_a.octets()[..3], [10, 244, 41]);
    assert_ne!(ip_a, ip_b);
    let mut allocated = net.allocations();
    allocated.sort();
    let mut want = vec![ip_a.to_string(), ip_b.to_string()];
    want.sort();
    assert_eq!(allocated, want);
    assert_eq!(sa.labels["app"], "pod-a");

    // The helper sits in the pod's leaf cgroup, in v1 and v2 hierarchies.
    let helper_a = ia["helperPid"].as_u64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{helper_a}/cgroup")).unwrap();
    let leaf = format!("/crid/{a}/crid-pod-helper");
    assert!(
        cg.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&leaf)),
        "{cg}"
    );
    assert!(
        cg.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&leaf)),
        "{cg}"
    );

    // After set-up a helper that is not the pod's shim keeps only CAP_KILL,
    // CAP_SYS_PTRACE and CAP_SYS_ADMIN, in every set. As the pod's shim it
    // keeps crid's (runc needs them, and overlayfs uses the mounter's
    // credentials for the containers' copy-ups).
    let cap = |pid: u64, set: &str| -> String {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = st.lines().find(|l| l.starts_with(set)).unwrap();
        line[set.len()..].trim().to_string()
    };
    let crid_pid = u64::from(env.crid.pid().unwrap());
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let want = if crid_e2e::helper_is_shim(&env.config, "") {
            cap(crid_pid, set)
        } else {
            "0000000000280020".to_string()
        };
        assert_eq!(cap(helper_a, set), want, "{set}");
    }

    // Hostname and sysctl inside the pod's namespaces.
    let ns_a = PathBuf::from(ia["nsDir"].as_str().unwrap());
    assert!(ns_a.to_string_lossy().contains(&a));
    let host = in_ns(
        &ns_a.join("uts"),
        nix::sched::CloneFlags::CLONE_NEWUTS,
        || nix::unistd::gethostname().unwrap().into_string().unwrap(),
    );
    assert_eq!(host, "pod-a");
    let port_start = in_ns(
        &ns_a.join("net"),
        nix::sched::CloneFlags::CLONE_NEWNET,
        || std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
    );
    assert_eq!(port_start.trim(), "100");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .unwrap()
            .trim(),
        "1024",
        "the host's value is untouched"
    );

    let shmmni = in_ns(
        &ns_a.join("ipc"),
        nix::sched::CloneFlags::CLONE_NEWIPC,
        || std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
    );
    assert_eq!(shmmni.trim(), "2048");

    // The pod's PID namespace: its init is pid 1 there, and not in ours.
    let reaper = ia["reaperPid"].as_u64().unwrap();
    let st = std::fs::read_to_string(format!("/proc/{reaper}/status")).unwrap();
    let nspid = st.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{reaper}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );

    // Per-pod files and /dev/shm.
    let sandbox_dir = PathBuf::from(ia["sandboxDir"].as_str().unwrap());
    let resolv = std::fs::read_to_string(sandbox_dir.join("resolv.conf")).unwrap();
    assert_eq!(
        resolv,
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox_dir.join("hostname")).unwrap(),
        "pod-a\n"
    );
    let hosts = std::fs::read_to_string(sandbox_dir.join("hosts")).unwrap();
    assert!(hosts.contains(&format!("{ip_a}\tpod-a")), "{hosts}");
    assert!(mounts_under(&runtime_dir).contains(&sandbox_dir.join("shm")));

    // Pod A reaches pod B over the bridge.
    let ns_b = PathBuf::from(ib["nsDir"].as_str().unwrap());
    let listener = pod_listener(&ns_b, 8080);
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        (buf, peer)
    });
    in_ns(
        &ns_a.join("net"),
        nix::sched::CloneFlags::CLONE_NEWNET,
        || {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((ip_b, 8080)), Duration::from_secs(5))
                    .unwrap();
            s.write_all(b"hello").unwrap();
        },
    );
    let (got, peer) = server.join().unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(ip_a));

    // List with filters.
    let list = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "pod-b".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].id, b);

    let helper_b = ib["helperPid"].as_u64().unwrap();
    stop_remove(&mut c, &a).await;
    stop_remove(&mut c, &b).await;
    assert_gone(&runtime_dir, &a, helper_a, net);
    assert_gone(&runtime_dir, &b, helper_b, net);
    // Removing an unknown id is fine (kubelet semantics).
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn port_mapping_reaches_the_pod_from_the_host() {
    let env = Env::start(42, None).await;
    let (net, runtime_dir) = (&env.net, env.runtime_dir.clone());
    let mut c = env.crid.clients().await.unwrap();

    let mut cfg = pod_config("web", "uid-web");
    cfg.port_mappings.push(cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 18042,
        host_ip: String::new(),
    });
    let id = run(&mut c, cfg).await.unwrap();
    let (_, info) = status(&mut c, &id).await;
    let ns = PathBuf::from(info["nsDir"].as_str().unwrap());
    let listener = pod_listener(&ns, 8080);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"pong").unwrap();
    });
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from((net.gateway(), 18042)),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    server.join().unwrap();

    let helper = info["helperPid"].as_u64().unwrap();
    stop_remove(&mut c, &id).await;
    assert_gone(&runtime_dir, &id, helper, net);
    let rules = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains(&id), "portmap rules left:\n{rules}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_helper_is_replaced_and_the_pod_keeps_its_ip_and_stop_is_idempotent() {
    let mut env = Env::start(43, None).await;
    let runtime_dir = env.runtime_dir.clone();
    let mut c = env.crid.clients().await.unwrap();

    let id = run(&mut c, pod_config("sturdy", "uid-sturdy"))
        .await
        .unwrap();
    let (st, info) = status(&mut c, &id).await;
    let ip = st.network.unwrap().ip;
    let old = info["helperPid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let new = replaced_helper(&c, &id, old, Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("helper not replaced within 2 s; log:\n{}", env.crid.log()));
    assert!(started.elapsed() < Duration::from_secs(2));
    let (st, _) = status(&mut c, &id).await;
    assert_eq!(st.network.unwrap().ip, ip, "the pod keeps its IP");
    let cg = std::fs::read_to_string(format!("/proc/{new}/cgroup")).unwrap();
    assert!(cg.contains(&format!("/crid/{id}/crid-pod-helper")), "{cg}");

    // A crid restart leaves the helper running and the pod ready.
    drop(c);
    env.crid.stop();
    assert!(alive(new), "helper survives a crid stop");
    env.crid = CridProcess::start(env.config.clone()).await.unwrap();
    let mut c = env.crid.clients().await.unwrap();
    let (st, info) = status(&mut c, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(info["helperPid"].as_u64(), Some(new));

    // The helper dying while crid is down is repaired when crid comes back.
    drop(c);
    env.crid.stop();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.crid = CridProcess::start(env.config.clone()).await.unwrap();
    let mut c = env.crid.clients().await.unwrap();
    let new = replaced_helper(&c, &id, new, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "helper not replaced after a crid restart; log:\n{}",
                env.crid.log()
            )
        });
    let (st, _) = status(&mut c, &id).await;
    assert_eq!(st.network.unwrap().ip, ip, "the pod keeps its IP");

    // Stop twice, then remove.
    for _ in 0..2 {
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    let (st, _) = status(&mut c, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    stop_remove(&mut c, &id).await;
    assert_gone(&runtime_dir, &id, new, &env.net);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_cni_plugin_leaves_nothing_behind() {
    let script = |_: &Path| {
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"crid-fail says no\"}'\n  exit 1\nfi\nexit 0\n".to_string()
    };
    let env = Env::start(44, Some(("crid-fail", &script))).await;
    let (net, runtime_dir) = (&env.net, env.runtime_dir.clone());
    let mut c = env.crid.clients().await.unwrap();

    let err = run(&mut c, pod_config("doomed", "uid-doomed"))
        .await
        .unwrap_err();
    assert!(err.message().contains("crid-fail says no"), "{err:?}");
    let list = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.items.is_empty(), "{list:?}");
    assert!(mounts_under(&runtime_dir).is_empty());
    let left: Vec<_> = std::fs::read_dir(runtime_dir.join("sandboxes"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    let marker = runtime_dir.to_string_lossy().into_owned();
    let helpers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<u64>()
                .is_ok_and(alive)
        })
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd)
                .contains(&marker)
                .then(|| e.path().display().to_string())
        })
        .collect();
    assert!(helpers.is_empty(), "helper left: {helpers:?}");
    // The name is free again.
    std::fs::remove_file(env.config.cni.conf_dir.join("10-test.conflist")).unwrap();
    let err = run(&mut c, pod_config("doomed", "uid-doomed"))
        .await
        .unwrap_err();
    assert!(!err.message().contains("reserved"), "{err:?}");
    assert!(
        err.message().contains("no network config"),
        "config removal picked up: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_has_no_netns_and_bad_input_is_refused() {
    let env = Env::start(45, None).await;
    let (net, runtime_dir) = (&env.net, env.runtime_dir.clone());
    let mut c = env.crid.clients().await.unwrap();

    let mut cfg = pod_config("hostnet", "uid-hostnet");
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            pid: cri::NamespaceMode::Node as i32,
            ipc: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut c, cfg.clone()).await.unwrap();
    let (st, info) = status(&mut c, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(st.network.is_none(), "{st:?}");
    let ns = PathBuf::from(info["nsDir"].as_str().unwrap());
    assert!(!ns.join("net").exists() && !ns.join("ipc").exists());
    let helper = info["helperPid"].as_u64().unwrap();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{helper}/ns/net")).unwrap(),
        host_net
    );
    assert!(net.allocations().is_empty());

    // A second Run with the same name while the first is stopped: AlreadyExists.
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    let err = run(&mut c, cfg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    stop_remove(&mut c, &id).await;
    assert_gone(&runtime_dir, &id, helper, net);

    let mut bad = Vec::new();
    let mut no_md = pod_config("x", "u");
    no_md.metadata = None;
    bad.push((no_md, ""));
    let mut traversal = pod_config("x", "u");
    traversal.log_directory = "/var/log/pods/../../../etc".into();
    bad.push((traversal, ""));
    let mut bad_name = pod_config("../etc", "u");
    bad_name.hostname = "h".into();
    bad.push((bad_name, ""));
    bad.push((pod_config("x", "u"), "kata"));
    let mut sysctl = pod_config("x", "u");
    sysctl
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("vm.swappiness".into(), "1".into());
    bad.push((sysctl, ""));
    for (cfg, handler) in bad {
        let err = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{cfg:?}: {err:?}");
    }
    let list = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.items.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn half_failed_teardown_stays_listed_not_ready_until_a_retry_succeeds() {
    // A chained plugin that passes prevResult through on ADD and fails DEL
    // while the marker file exists.
    let script = |dir: &Path| {
        r#"#!/usr/bin/python3
import json, os, sys
conf = json.load(sys.stdin)
if os.environ["CNI_COMMAND"] == "ADD":
    print(json.dumps(conf["prevResult"]))
elif os.environ["CNI_COMMAND"] == "DEL" and os.path.exists("MARKER"):
    print(json.dumps({"cniVersion": "1.0.0", "code": 999, "msg": "DEL denied by test"}))
    sys.exit(1)
"#
        .replace("MARKER", &dir.join("deny-del").display().to_string())
    };
    let env = Env::start(46, Some(("crid-deny-del", &script))).await;
    let (net, runtime_dir) = (&env.net, env.runtime_dir.clone());
    let marker = env.dir.path().join("deny-del");
    let mut c = env.crid.clients().await.unwrap();

    let id = run(&mut c, pod_config("stubborn", "uid-stubborn"))
        .await
        .unwrap();
    let (_, info) = status(&mut c, &id).await;
    let helper = info["helperPid"].as_u64().unwrap();
    std::fs::write(&marker, "").unwrap();
    let err = c
        .runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("DEL denied by test"), "{err:?}");
    let err = c
        .runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("DEL denied by test"), "{err:?}");
    let (st, info) = status(&mut c, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    assert!(
        info["state"]["reason"]
            .as_str()
            .unwrap()
            .contains("teardown failed"),
        "{info}"
    );
    let list = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 1, "still listed for the kubelet to retry");

    std::fs::remove_file(&marker).unwrap();
    stop_remove(&mut c, &id).await;
    assert_gone(&runtime_dir, &id, helper, net);
}
