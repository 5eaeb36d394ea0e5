//! Pod user namespaces end to end (CRI `NamespaceOption.userns_options`):
//! real pod helpers, runc containers in the pod's user namespace with
//! idmapped root filesystems, a CNI network per test (10.244.6N.0/24).
//! What is checked is what the kubelet and critest observe: Status, CRI
//! errors, log files, what the container sees and what its processes are
//! on the host, and that nothing is left behind.

use crid_e2e::images::{Entry, ImageBuilder};
use crid_e2e::net::TestNet;
use crid_e2e::pods::{join_lines, parse_cri_log, sh, Node};
use crid_e2e::workload::exec_sync;
use crid_e2e::{mounts_under, pod_processes, CridProcess};
use crid_proto::cri::{self, NamespaceMode};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// One test's node and network, dropped in that order.
struct World {
    n: Node,
    net: TestNet,
}

/// A root-only file in a second image layer: readable by the container's
/// root only if the layer is idmapped into the pod's user namespace.
const SECRET: &str = "secret/root-only";

impl World {
    /// A node with network `net` (and an extra CNI plugin `(type, script)`);
    /// `reachable: false` closes the test dir (0700), so that a container's
    /// root in its user namespace could not reach crid's runtime dir below it.
    async fn start(net: u8, reachable: bool, extra: Option<(&str, &str)>) -> World {
        let mut tn = None;
        let image = ImageBuilder::busybox().unwrap().layer(
            vec![
                Entry::dir("secret", 0o700),
                Entry::File {
                    path: SECRET.into(),
                    data: b"root only\n".to_vec(),
                    mode: 0o600,
                },
            ],
            crid_e2e::images::Compression::Gzip,
        );
        let n = Node::start_with_image(image, |config| {
            let dir = config.state_dir.parent().unwrap().to_path_buf();
            if !reachable {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            tn = Some(TestNet::new(net, config, extra.map(|e| e.0)));
            if let Some((name, script)) = extra {
                let plugin = config.cni.bin_dirs[0].join(name);
                std::fs::write(&plugin, script).unwrap();
                std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        })
        .await;
        World {
            n,
            net: tn.expect("the network is made while the node starts"),
        }
    }

    fn dir(&self) -> &Path {
        self.n.dir.path()
    }

    async fn try_run_pod(&mut self, cfg: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        self.n
            .c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// The stdout lines of container `name` of pod `pod`.
    fn stdout(&self, pod: &str, name: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.n.log_dir(pod).join(format!("{name}.log")))
            .unwrap_or_default();
        join_lines(&parse_cri_log(&log))
            .into_iter()
            .filter(|(s, _)| s == "stdout")
            .map(|(_, l)| l)
            .collect()
    }

    /// Runs `script` in a new container of `pod` (with the namespace
    /// options the kubelet copies from the pod) to completion; returns its
    /// exit code and stdout lines.
    async fn run_to_end(
        &mut self,
        pod: &str,
        pod_cfg: &cri::PodSandboxConfig,
        name: &str,
        cmd: &[&str],
    ) -> (i32, Vec<String>) {
        let mut cfg = sh(name, &self.n.image, "");
        cfg.command = cmd.iter().map(|s| s.to_string()).collect();
        cfg.linux = Some(container_linux(pod_cfg));
        let id = self.n.run(pod, pod_cfg, cfg).await;
        let st = self.n.wait_exited(&id, Duration::from_secs(60)).await;
        let pod_name = pod_cfg.metadata.as_ref().unwrap().name.clone();
        (st.exit_code, self.stdout(&pod_name, name))
    }

    /// Nothing of the test's pods is left: no pod helper, pod root or shim
    /// (given a moment to exit), no mount (namespace pins, rootfs), no
    /// sandbox dir or record, no IP, no containerd container or task.
    async fn assert_nothing_left(&self) {
        let dir = self.dir().to_path_buf();
        let gone = crid_e2e::wait_for(Duration::from_secs(10), || {
            let dir = dir.clone();
            async move { pod_processes(&dir).is_empty().then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "processes left: {:?}", pod_processes(&dir));
        let mounts = mounts_under(self.dir());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let cfg = &self.n.crid.config;
        for d in [
            cfg.runtime_dir.join("sandboxes"),
            cfg.state_dir.join("sandboxes"),
        ] {
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{}: {left:?}", d.display());
        }
        let ips = self.net.allocations();
        assert!(ips.is_empty(), "{ips:?}");
        self.n.assert_no_containerd_objects();
    }
}

/// An InvalidArgument whose message says `why`.
fn assert_invalid(r: Result<String, tonic::Status>, why: &str) {
    let err = r.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{why}: {err:?}");
    assert!(err.message().contains(why), "{why}: {err:?}");
}

/// critest's mapping: container ids 0..100000 on host ids 1000..101000.
fn mapping() -> Vec<cri::IdMapping> {
    vec![cri::IdMapping {
        container_id: 0,
        host_id: 1000,
        length: 100000,
    }]
}

fn userns(
    mode: NamespaceMode,
    uids: Vec<cri::IdMapping>,
    gids: Vec<cri::IdMapping>,
) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: mode as i32,
        uids,
        gids,
    }
}

/// A pod on the test's network with `userns` (and pid mode `pid`), a DNS
/// config, a hostname and two namespaced sysctls (one net, one IPC).
fn pod(
    w: &World,
    name: &str,
    userns: Option<cri::UserNamespace>,
    pid: NamespaceMode,
) -> cri::PodSandboxConfig {
    let mut cfg = w.n.pod_config(name);
    cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec![],
    });
    let sysctls = [
        ("net.ipv4.ip_unprivileged_port_start", "81"),
        ("kernel.shmmni", "2048"),
    ];
    cfg.linux = Some(cri::LinuxPodSandboxConfig {
        sysctls: sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        // The pod's own network (pod_config's is the node's).
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: pid as i32,
                userns_options: userns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

/// [`pod`] in its own user namespace with critest's mapping.
fn critest_pod(w: &World, name: &str, pid: NamespaceMode) -> cri::PodSandboxConfig {
    pod(
        w,
        name,
        Some(userns(NamespaceMode::Pod, mapping(), mapping())),
        pid,
    )
}

/// What the kubelet gives a container: the pod's namespace options.
fn container_linux(pod: &cri::PodSandboxConfig) -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: pod
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The uid_map lines as (container id, host id, length).
fn map_lines(text: &[String]) -> Vec<Vec<String>> {
    text.iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

async fn status(w: &mut World) -> cri::StatusResponse {
    w.n.c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
}

async fn pod_userns_status(w: &mut World, id: &str) -> Option<cri::UserNamespace> {
    w.n.c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status?
        .linux?
        .namespaces?
        .options?
        .userns_options
}

/// `Uid:`/`Gid:` of a host process, e.g. "1000 1000 1000 1000".
fn proc_ids(pid: u64, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_mode_runs_containers_in_the_pods_user_namespace() {
    let mut w = World::start(61, true, None).await;

    // Advertised for every runtime handler.
    let st = status(&mut w).await;
    assert!(!st.runtime_handlers.is_empty());
    for h in &st.runtime_handlers {
        assert!(
            h.features.as_ref().is_some_and(|f| f.user_namespaces),
            "{h:?} {:?}",
            st.info.get("userNamespaces")
        );
    }
    assert_eq!(st.info["userNamespaces"], r#"{"supported":true}"#);

    let cfg = critest_pod(&w, "userns", NamespaceMode::Pod);
    let pod_id = w.n.run_pod(&cfg).await;
    let reported = pod_userns_status(&mut w, &pod_id).await.unwrap();
    assert_eq!(reported, userns(NamespaceMode::Pod, mapping(), mapping()));
    // The pod's init keeps no host identity: it is the pod's root.
    let init = w.n.pod_info(&pod_id).await["reaperPid"].as_u64().unwrap();
    assert_eq!(proc_ids(init, "Uid:"), "1000 1000 1000 1000");
    assert_eq!(proc_ids(init, "Gid:"), "1000 1000 1000 1000");
    assert_eq!(proc_ids(init, "Groups:"), "");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{init}/uid_map"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["0", "1000", "100000"]
    );

    // critest's container: its uid_map is the pod's mapping, exit 0, logged.
    let (code, out) = w
        .run_to_end(&pod_id, &cfg, "uidmap", &["cat", "/proc/self/uid_map"])
        .await;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(map_lines(&out), vec![vec!["0", "1000", "100000"]]);

    // The container's view: root of its namespace, the image's files owned
    // by root (idmapped layers: a 0600 root file of the second layer is
    // readable), its own writes and copy-ups, the pod's hostname, sysctls,
    // /dev/shm, resolv.conf and hosts.
    let script = "cat /proc/self/gid_map
echo \"ids $(id -u):$(id -g)\"
echo \"bin $(stat -c %u:%g /bin/busybox)\"
cat /secret/root-only
echo written > /written && echo \"new $(stat -c %u:%g /written)\"
echo appended >> /secret/root-only && tail -n 1 /secret/root-only
mkdir /etc/made && echo \"made $(stat -c %u:%g /etc/made)\"
echo \"host $(hostname)\"
echo \"shmmni $(cat /proc/sys/kernel/shmmni)\"
echo \"port $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)\"
echo shm > /dev/shm/s && echo \"shm $(cat /dev/shm/s)\"
grep -q 'nameserver 10.96.0.10' /etc/resolv.conf && echo resolv
grep -q \"$(hostname)\" /etc/hosts && echo hosts
ls /root >/dev/null && echo root-home";
    let (code, out) = w
        .run_to_end(&pod_id, &cfg, "inside", &["sh", "-c", script])
        .await;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(
        out,
        vec![
            "         0       1000     100000",
            "ids 0:0",
            "bin 0:0",
            "root only",
            "new 0:0",
            "appended",
            "made 0:0",
            "host userns",
            "shmmni 2048",
            "port 81",
            "shm shm",
            "resolv",
            "hosts",
            "root-home",
        ]
    );

    // Volumes as the kubelet gives them: every mount carries the pod's
    // mappings, so files the node made as root are the container root's.
    let vol = w.dir().join("volume");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("token"), "t0ken\n").unwrap();
    std::fs::set_permissions(vol.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let term = w.dir().join("termination-log");
    std::fs::write(&term, "").unwrap();
    let kubelet_mount = |container_path: &str, host: &Path| cri::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        uid_mappings: mapping(),
        gid_mappings: mapping(),
        ..Default::default()
    };
    let mut c = sh(
        "volumes",
        &w.n.image,
        "stat -c '%u:%g %a' /vol/token; cat /vol/token; echo new > /vol/new; \
         stat -c %u:%g /dev/termination-log; echo bye > /dev/termination-log",
    );
    c.linux = Some(container_linux(&cfg));
    c.mounts = vec![
        kubelet_mount("/vol", &vol),
        kubelet_mount("/dev/termination-log", &term),
    ];
    c.annotations.insert(
        "io.kubernetes.container.terminationMessagePath".into(),
        "/dev/termination-log".into(),
    );
    let vid = w.n.run(&pod_id, &cfg, c).await;
    let st = w.n.wait_exited(&vid, Duration::from_secs(60)).await;
    assert_eq!((st.exit_code, st.message.as_str()), (0, "bye\n"), "{st:?}");
    assert_eq!(
        w.stdout("userns", "volumes"),
        vec!["0:0 600", "t0ken", "0:0"]
    );
    // What the container's root wrote is the node's root's on the host.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(vol.join("new")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));

    // A running container: on the host its processes are the mapped ids,
    // not root; exec joins the same namespace.
    let mut sleeper = sh("sleeper", &w.n.image, "");
    sleeper.command = vec!["sleep".into(), "3600".into()];
    sleeper.linux = Some(container_linux(&cfg));
    let id = w.n.run(&pod_id, &cfg, sleeper).await;
    let pid = w.n.container_info(&id).await["pid"].as_u64().unwrap();
    assert_eq!(proc_ids(pid, "Uid:"), "1000 1000 1000 1000");
    assert_eq!(proc_ids(pid, "Gid:"), "1000 1000 1000 1000");
    let r = exec_sync(&mut w.n.c, &id, &["cat", "/proc/self/uid_map"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let got: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(map_lines(&got), vec![vec!["0", "1000", "100000"]]);
    let r = exec_sync(&mut w.n.c, &id, &["id", "-u"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "0\n");

    w.n.stop_remove_pod(&pod_id).await;
    w.assert_nothing_left().await;
    // Removing the containers detached the volumes, never removed through them.
    assert_eq!(
        std::fs::read_to_string(vol.join("token")).unwrap(),
        "t0ken\n"
    );
    assert_eq!(std::fs::read_to_string(vol.join("new")).unwrap(), "new\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_mode_keeps_the_nodes_user_namespace() {
    let mut w = World::start(62, true, None).await;
    let cfg = pod(
        &w,
        "node",
        Some(userns(NamespaceMode::Node, vec![], vec![])),
        NamespaceMode::Container,
    );
    let pod_id = w.n.run_pod(&cfg).await;
    assert_eq!(
        pod_userns_status(&mut w, &pod_id).await.unwrap().mode,
        NamespaceMode::Node as i32
    );
    let (code, out) = w
        .run_to_end(&pod_id, &cfg, "uidmap", &["cat", "/proc/self/uid_map"])
        .await;
    assert_eq!(code, 0, "{out:?}");
    let host: Vec<String> = std::fs::read_to_string("/proc/self/uid_map")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(map_lines(&out), map_lines(&host));
    // The container's own root is the node's root.
    let (code, out) = w
        .run_to_end(
            &pod_id,
            &cfg,
            "id",
            &["sh", "-c", "stat -c %u /bin/busybox"],
        )
        .await;
    assert_eq!((code, out), (0, vec!["0".to_string()]));
    w.n.stop_remove_pod(&pod_id).await;
    w.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_user_namespace_options_are_refused_and_leave_nothing() {
    let mut w = World::start(63, true, None).await;
    let two = vec![
        mapping()[0],
        cri::IdMapping {
            container_id: 0,
            host_id: 2000,
            length: 100000,
        },
    ];
    let unmapped_root = vec![cri::IdMapping {
        container_id: 1,
        host_id: 1000,
        length: 100000,
    }];
    let cases = [
        (
            "two-mappings",
            Some(userns(NamespaceMode::Pod, two.clone(), two)),
            "exactly one uid mapping, got 2",
        ),
        (
            "no-root",
            Some(userns(
                NamespaceMode::Pod,
                unmapped_root.clone(),
                unmapped_root,
            )),
            "must map container id 0",
        ),
        (
            "container-mode",
            Some(userns(NamespaceMode::Container, vec![], vec![])),
            "mode CONTAINER is not supported",
        ),
        (
            "target-mode",
            Some(userns(NamespaceMode::Target, vec![], vec![])),
            "mode TARGET is not supported",
        ),
        (
            "no-gids",
            Some(userns(NamespaceMode::Pod, mapping(), vec![])),
            "exactly one gid mapping, got 0",
        ),
        (
            "node-with-maps",
            Some(userns(NamespaceMode::Node, mapping(), mapping())),
            "NODE takes no mappings",
        ),
    ];
    for (name, u, why) in cases {
        let cfg = pod(&w, name, u, NamespaceMode::Pod);
        assert_invalid(w.try_run_pod(&cfg).await, why);
    }
    // A user namespace with the node's network namespace.
    let mut cfg = critest_pod(&w, "host-net", NamespaceMode::Pod);
    let sc = cfg
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap();
    sc.namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
    assert_invalid(w.try_run_pod(&cfg).await, "cannot use the node's network");
    let list =
        w.n.c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert!(list.items.is_empty(), "{list:?}");
    w.assert_nothing_left().await;

    // A container must share its pod's user namespace.
    let cfg = critest_pod(&w, "ok", NamespaceMode::Pod);
    let pod_id = w.n.run_pod(&cfg).await;
    let other = cri::IdMapping {
        container_id: 0,
        host_id: 500000,
        length: 65536,
    };
    for (name, u, why) in [
        (
            "node",
            userns(NamespaceMode::Node, vec![], vec![]),
            "asks for user namespace NODE",
        ),
        (
            "other",
            userns(NamespaceMode::Pod, vec![other], vec![other]),
            "\"0 500000 65536\"",
        ),
    ] {
        let mut c = sh(name, &w.n.image, "true");
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(u),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_invalid(w.n.create(&pod_id, &cfg, c).await, why);
    }
    // A volume idmapped with other mappings than the pod's.
    let mut c = sh("vol", &w.n.image, "true");
    c.linux = Some(container_linux(&cfg));
    c.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: w.dir().display().to_string(),
        uid_mappings: vec![other],
        gid_mappings: vec![other],
        ..Default::default()
    }];
    assert_invalid(
        w.n.create(&pod_id, &cfg, c).await,
        "only with the pod's own mappings",
    );
    let containers =
        w.n.c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(containers.is_empty(), "{containers:?}");
    w.n.assert_no_containerd_objects();
    w.n.stop_remove_pod(&pod_id).await;
    w.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_cannot_says_so_and_refuses() {
    // A 0700 dir above the runtime dir: a container's root could not reach
    // its rootfs.
    let mut w = World::start(64, false, None).await;
    let st = status(&mut w).await;
    for h in &st.runtime_handlers {
        assert!(
            h.features.as_ref().is_some_and(|f| !f.user_namespaces),
            "{h:?}"
        );
    }
    let info: serde_json::Value = serde_json::from_str(&st.info["userNamespaces"]).unwrap();
    assert_eq!(info["supported"], false);
    let dir = w.dir().display().to_string();
    let reason = info["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{dir} (mode 700) is not searchable")),
        "{reason}"
    );

    let cfg = critest_pod(&w, "refused", NamespaceMode::Pod);
    let err = w.try_run_pod(&cfg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("user namespaces are not supported on this node"),
        "{err:?}"
    );
    assert!(err.message().contains(&dir), "{err:?}");
    w.assert_nothing_left().await;
    // Pods without a user namespace are unaffected.
    let cfg = pod(&w, "plain", None, NamespaceMode::Pod);
    let pod_id = w.n.run_pod(&cfg).await;
    w.n.stop_remove_pod(&pod_id).await;
    w.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_helper_killed_mid_set_up_leaves_nothing() {
    // Kills the pod helper (its parent) during CNI ADD, after the pod root
    // has set the pod's namespaces up and is waiting for the go-ahead.
    let script = "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then kill -9 $PPID; fi\nexit 0\n";
    let mut w = World::start(65, true, Some(("crid-kill-helper", script))).await;
    let cfg = critest_pod(&w, "killed", NamespaceMode::Pod);
    let err = w.try_run_pod(&cfg).await.unwrap_err();
    assert!(err.message().contains("set-up report"), "{err:?}");
    // The pod root noticed its helper is gone and exited.
    w.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaced_pods_survive_crid_and_helper_restarts() {
    let mut w = World::start(66, true, None).await;
    // PID mode CONTAINER: the pod root exits after set-up (the pins keep the
    // namespaces), each container gets its own PID namespace in the pod's
    // user namespace.
    let cfg = critest_pod(&w, "restarts", NamespaceMode::Container);
    let pod_id = w.n.run_pod(&cfg).await;
    let mut sleeper = sh("sleeper", &w.n.image, "");
    sleeper.command = vec!["sleep".into(), "3600".into()];
    sleeper.linux = Some(container_linux(&cfg));
    let id = w.n.run(&pod_id, &cfg, sleeper).await;

    // crid restarts: the running container keeps its rootfs, exec works.
    // What a crid that died in CreateContainer left (a runtime dir with a
    // volume still attached, no record) is detached and removed at start,
    // never removed through.
    let config = w.n.crid.config.clone();
    w.n.crid.stop();
    let data = w.dir().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("keep"), "kept\n").unwrap();
    let orphan = config.runtime_dir.join("containers").join("0".repeat(64));
    let attached = orphan.join("volumes/0");
    std::fs::create_dir_all(&attached).unwrap();
    nix::mount::mount(
        Some(&data),
        &attached,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    w.n.crid = CridProcess::start(config).await.unwrap();
    w.n.c = w.n.crid.clients().await.unwrap();
    assert!(!orphan.exists(), "{} left", orphan.display());
    assert_eq!(
        std::fs::read_to_string(data.join("keep")).unwrap(),
        "kept\n"
    );
    let r = exec_sync(
        &mut w.n.c,
        &id,
        &["sh", "-c", "echo again > /again && cat /again && id -u"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "again\n0\n", "{r:?}");

    // The helper dies: a new one re-adopts the pinned namespaces.
    let info = w.n.pod_info(&pod_id).await;
    let helper = info["helperPid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let replaced = crid_e2e::wait_for(Duration::from_secs(20), || {
        let mut n = w.n.c.clone();
        let pod_id = pod_id.clone();
        async move {
            let r = n
                .runtime
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: pod_id,
                    verbose: true,
                })
                .await
                .ok()?
                .into_inner();
            let info: serde_json::Value = serde_json::from_str(r.info.get("info")?).ok()?;
            let pid = info["helperPid"].as_u64()?;
            (pid != helper && r.status?.state == cri::PodSandboxState::SandboxReady as i32)
                .then_some(pid)
        }
    })
    .await;
    assert!(replaced.is_some(), "no new helper");
    // A new container after the re-adoption joins the same user namespace.
    let (code, out) = w
        .run_to_end(
            &pod_id,
            &cfg,
            "after",
            &["sh", "-c", "cat /proc/self/uid_map; echo x > /x && cat /x"],
        )
        .await;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(map_lines(&out[..1]), vec![vec!["0", "1000", "100000"]]);
    assert_eq!(out[1], "x");

    w.n.stop_remove_pod(&pod_id).await;
    w.assert_nothing_left().await;
}
