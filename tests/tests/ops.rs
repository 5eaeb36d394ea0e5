//! What an operator sees: `crid debug pods|pod|config` on a node with a real
//! pod (helper in the pod cgroup, its PSS, the netns pin, the containers),
//! with crid running and with crid stopped.

use crid_e2e::debug_cli::{config_file, crid_debug, crid_debug_json, pod_entry};
use crid_e2e::pods::{sh, Node};
use crid_e2e::{workspace_bin, CridProcess};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Asserts what `debug pods` must say of a running pod, checking each claim
/// against the kernel rather than against crid.
fn assert_pod_seen(p: &serde_json::Value, pod: &str, helper_pid: u64, ctr_pid: u64, logs: &str) {
    assert_eq!(p["name"], "dbg", "{p:#}");
    assert_eq!(p["namespace"], "default", "{p:#}");
    assert_eq!(p["state"], "ready", "{p:#}");
    assert_eq!(p["helper_pid"], helper_pid, "{p:#}");
    assert_eq!(p["helper_alive"], true, "{p:#}");
    assert_eq!(p["helper_in_pod_cgroup"], true, "{p:#}");
    // The kernel agrees: the helper's own cgroup is the leaf under the pod's.
    let cgroup_path = p["cgroup_path"].as_str().expect("a cgroup path");
    assert!(
        cgroup_path.ends_with(pod),
        "{cgroup_path} is not pod {pod}'s"
    );
    let own = std::fs::read_to_string(format!("/proc/{helper_pid}/cgroup")).unwrap();
    let leaf = format!("{cgroup_path}/crid-pod-helper");
    assert!(
        own.lines().any(|l| l.ends_with(&format!(":{leaf}"))),
        "helper {helper_pid} is not in {leaf}: {own}"
    );
    assert!(
        p["helper_pss_kib"].as_u64().expect("a PSS figure") > 0,
        "{p:#}"
    );
    assert!(
        p["overhead_pss_kib"].as_u64().unwrap() >= p["helper_pss_kib"].as_u64().unwrap(),
        "{p:#}"
    );
    // The netns path is the namespace the container runs in.
    let netns = p["netns_path"].as_str().expect("the pod has its own netns");
    assert_eq!(
        std::fs::metadata(netns).unwrap().ino(),
        std::fs::metadata(format!("/proc/{ctr_pid}/ns/net"))
            .unwrap()
            .ino(),
        "{netns} is not the container's network namespace"
    );
    assert_eq!(p["log_directory"], logs, "{p:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_shows_each_pods_helper_in_its_cgroup_with_its_pss() {
    let (mut n, _net) = Node::start_with_net(251).await;
    let config = config_file(&n);
    let pod_cfg = n.pod_config_with_netns("dbg");
    let pod = n.run_pod(&pod_cfg).await;
    let ctr = n
        .run(&pod, &pod_cfg, sh("app", &n.image, "exec sleep 1000"))
        .await;
    let helper_pid = n.pod_info(&pod).await["helperPid"]
        .as_u64()
        .expect("verbose PodSandboxStatus names the helper pid");
    let ctr_pid = n.container_info(&ctr).await["pid"]
        .as_u64()
        .expect("verbose ContainerStatus names the pid");

    let p = pod_entry(&crid_debug_json(&config, &["pods"]), &pod);
    assert_pod_seen(&p, &pod, helper_pid, ctr_pid, &pod_cfg.log_directory);

    // The table an operator reads says the same.
    let table = crid_debug(&config, &["pods"]);
    println!("crid debug pods:\n{table}");
    println!(
        "crid debug pod:\n{}",
        crid_debug(&config, &["pod", &pod[..10]])
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&pod[..13]))
        .unwrap_or_else(|| panic!("no row for {pod}:\n{table}"));
    assert!(
        row.contains(&format!("{helper_pid} (in pod cgroup)")) && row.contains("default/dbg"),
        "{row}"
    );

    // One pod by id prefix: the helper answers, the container is listed.
    let d = crid_debug_json(&config, &["pod", &pod[..10]]);
    assert_eq!(d["id"], pod.as_str());
    assert_eq!(d["helper_answer"]["status"], "answered", "{d:#}");
    assert_eq!(d["helper_answer"]["pid"], helper_pid, "{d:#}");
    let cs = d["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1, "{d:#}");
    assert_eq!(cs[0]["id"], ctr.as_str());
    assert_eq!(cs[0]["name"], "app");
    assert_eq!(cs[0]["state"], "running");
    assert_eq!(cs[0]["pid"], ctr_pid);

    // The effective config is the one crid runs with.
    let c = crid_debug_json(&config, &["config"]);
    assert_eq!(
        c["state_dir"],
        n.crid.config.state_dir.display().to_string()
    );
    assert_eq!(
        c["cni"]["conf_dir"],
        n.crid.config.cni.conf_dir.display().to_string()
    );

    // crid down: the debug command still sees the pod, alive, from the state
    // dir and /proc; the helper still answers on its own socket.
    n.crid.stop();
    let p = pod_entry(&crid_debug_json(&config, &["pods"]), &pod);
    assert_pod_seen(&p, &pod, helper_pid, ctr_pid, &pod_cfg.log_directory);
    let d = crid_debug_json(&config, &["pod", &pod]);
    assert_eq!(d["helper_answer"]["status"], "answered", "{d:#}");

    // An unknown pod is an error naming it.
    let out = Command::new(workspace_bin("crid"))
        .arg("--config")
        .arg(&config)
        .args(["debug", "pod", "nosuchpod"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchpod"));

    let cfg = n.crid.config.clone();
    n.crid = CridProcess::start(cfg).await.unwrap();
    n.c = n.crid.clients().await.unwrap();
    n.stop_remove_pod(&pod).await;
    let pods = crid_debug_json(&config, &["pods"]);
    assert!(
        pods.as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != pod.as_str()),
        "{pods:#}"
    );
}

fn inode(path: impl AsRef<Path>) -> u64 {
    let p = path.as_ref();
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

/// The `path` of namespace `kind` in a runtime spec's `linux.namespaces`.
fn ns_path(spec: &serde_json::Value, kind: &str) -> String {
    spec["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .find(|n| n["type"] == kind)
        .and_then(|n| n["path"].as_str())
        .unwrap_or_else(|| panic!("no {kind} namespace path in {spec:#}"))
        .to_string()
}

/// The verbose keys tools read from containerd's CRI plugin (`crictl
/// inspect`, `inspectp`, `info`), each checked against the kernel or the
/// request where it can be.
#[tokio::test(flavor = "multi_thread")]
async fn verbose_status_has_the_keys_crictl_and_tools_read() {
    let (mut n, _net) = Node::start_with_net(252).await;
    let pod_cfg = n.pod_config_with_netns("verbose");
    let pod = n.run_pod(&pod_cfg).await;
    let ctr = n
        .run(&pod, &pod_cfg, sh("app", &n.image, "exec sleep 1000"))
        .await;

    // crictl inspect
    let c = n.container_info(&ctr).await;
    let pid = c["pid"].as_u64().expect("info.pid");
    assert!(pid > 0, "{c:#}");
    assert_eq!(c["sandboxID"], pod.as_str());
    assert_eq!(c["removing"], false);
    assert_eq!(c["snapshotKey"], ctr.as_str());
    assert_eq!(c["snapshotter"], "overlayfs");
    assert_eq!(c["runtimeOptions"]["binary_name"], "runc", "{c:#}");
    if crid_e2e::helper_is_shim(&n.crid.config, "") {
        // The pod helper is the shim, already in the pod's cgroup: no
        // shim cgroup, as in the options containerd holds.
        assert_eq!(c["runtimeType"], "io.containerd.crid.v1");
        assert!(c["runtimeOptions"].get("shim_cgroup").is_none(), "{c:#}");
    } else {
        assert_eq!(c["runtimeType"], "io.containerd.runc.v2");
        let shim_cgroup = c["runtimeOptions"]["shim_cgroup"].as_str().unwrap();
        assert!(
            shim_cgroup.ends_with(&format!("{pod}/crid-shim")),
            "{shim_cgroup}"
        );
    }
    assert_eq!(c["config"]["metadata"]["name"], "app", "{c:#}");
    assert_eq!(c["config"]["image"]["image"], n.image.as_str(), "{c:#}");
    // The network namespace path in the spec is the one the process is in.
    assert_eq!(
        inode(ns_path(&c["runtimeSpec"], "network")),
        inode(format!("/proc/{pid}/ns/net"))
    );

    // crictl inspectp
    let p = n.pod_info(&pod).await;
    let helper = p["pid"].as_u64().expect("info.pid");
    assert_eq!(p["helperPid"], helper);
    assert_eq!(p["processStatus"], "running");
    assert_eq!(p["netNamespaceClosed"], false);
    assert_eq!(p["image"], "", "no pause image");
    assert_eq!(p["runtimeHandler"], "");
    assert_eq!(p["runtimeType"], c["runtimeType"]);
    assert_eq!(p["runtimeOptions"], c["runtimeOptions"]);
    assert_eq!(p["config"]["metadata"]["name"], "verbose", "{p:#}");
    assert_eq!(p["config"]["log_directory"], pod_cfg.log_directory.as_str());
    assert_eq!(
        p["runtimeSpec"]["annotations"]["io.kubernetes.cri.sandbox-id"],
        pod.as_str(),
        "{p:#}"
    );
    assert!(p["cniResult"]["ips"].is_array(), "{p:#}");
    // `nsenter -t <info.pid> -n` enters the pod's network: the pid, the
    // spec's netns path and the container agree.
    let pod_netns = ns_path(&p["runtimeSpec"], "network");
    assert_eq!(inode(&pod_netns), inode(format!("/proc/{helper}/ns/net")));
    assert_eq!(inode(&pod_netns), inode(format!("/proc/{pid}/ns/net")));
    let cgroups_path = p["runtimeSpec"]["linux"]["cgroupsPath"].as_str().unwrap();
    assert!(cgroups_path.ends_with(&pod), "{cgroups_path}");

    // crictl info
    let st =
        n.c.runtime
            .status(crid_proto::cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    let key = |k: &str| -> serde_json::Value {
        serde_json::from_str(
            st.info
                .get(k)
                .unwrap_or_else(|| panic!("no {k} in {:?}", st.info)),
        )
        .unwrap()
    };
    assert_eq!(key("lastCNILoadStatus"), "OK");
    assert_eq!(key("lastCNILoadStatus.default"), "OK");
    let cni = key("cniconfig");
    assert_eq!(
        cni["PluginConfDir"],
        n.crid.config.cni.conf_dir.display().to_string()
    );
    assert_eq!(
        cni["Networks"][0]["Config"]["Name"], "crid-test-252",
        "{cni:#}"
    );
    assert_eq!(
        cni["Networks"][0]["Config"]["Plugins"][0]["Network"]["type"],
        "bridge"
    );
    assert_eq!(
        key("config")["state_dir"],
        n.crid.config.state_dir.display().to_string()
    );

    // Stopped: the helper is gone and the netns closed.
    n.stop_pod(&pod).await.unwrap();
    let p = n.pod_info(&pod).await;
    assert_eq!(p["processStatus"], "stopped", "{p:#}");
    assert_eq!(p["netNamespaceClosed"], true, "{p:#}");
    n.remove_pod(&pod).await.unwrap();
}

/// `cgroup_driver = "systemd"`: refused at start, naming the way out, on a
/// node without systemd as PID 1 (this one, as CI's); reported by
/// RuntimeConfig where systemd runs.
#[tokio::test(flavor = "multi_thread")]
async fn systemd_cgroup_driver_needs_a_reachable_systemd() {
    let dir = crid_e2e::test_dir();
    let ctrd = crid_e2e::PrivateContainerd::start(&dir.path().join("containerd"))
        .await
        .unwrap();
    let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
    config.cgroup_driver = crid_common::config::CgroupDriver::Systemd;
    if Path::new("/run/systemd/system").is_dir() {
        let crid = CridProcess::start(config).await.unwrap();
        let mut c = crid.clients().await.unwrap();
        assert_eq!(
            c.cgroup_driver().await.unwrap(),
            crid_proto::cri::CgroupDriver::Systemd as i32
        );
        return;
    }
    let file = dir.path().join("systemd.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(workspace_bin("crid"))
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "crid started without systemd: {text}"
    );
    assert!(
        text.contains("cgroup_driver = \\\"systemd\\\" needs systemd as the init system")
            || text.contains("cgroup_driver = \"systemd\" needs systemd as the init system"),
        "{text}"
    );
    assert!(text.contains("cgroupfs"), "{text}");
    assert!(!config.socket.exists(), "a refused crid left its socket");
}
