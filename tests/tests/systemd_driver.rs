//! The systemd cgroup driver against a real systemd (issue 15): run only
//! inside the box of tests/systemd/box.sh, where systemd 252 is PID 1 of
//! its own namespaces (`bash tests/systemd/run.sh` starts it, runs this
//! suite with `--ignored` and checks the host is unchanged). Asserted as a
//! kubelet with the systemd driver would see it, plus what systemd and the
//! kernel say: the pod's slice, the helper's delegated scope, every
//! cgroup hierarchy of a container's process, stats and metrics read from
//! the scope's and the slice's cgroups, `crid debug pods` finding the
//! helper in its scope, and stopping a pod with a running container.

use crid_common::config::{CgroupDriver, RUNC_V2_RUNTIME_HANDLER};
use crid_e2e::debug_cli::{config_file, crid_debug, crid_debug_json, pod_entry};
use crid_e2e::images::ImageBuilder;
use crid_e2e::pods::{sh, val, Node};
use crid_proto::cri;
use std::process::Command;
use std::time::{Duration, Instant};

/// Refuses to run where systemd is not PID 1 (the host of this project).
fn in_box() {
    assert!(
        std::path::Path::new("/run/systemd/system").is_dir(),
        "not under systemd: run this suite through tests/systemd/run.sh"
    );
}

/// `systemctl show -p <prop> --value <unit>`.
fn unit_prop(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", prop, "--value", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// /proc/<pid>/cgroup as (hierarchy, path) pairs.
fn cgroups_of(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, h, p) = (it.next()?, it.next()?, it.next()?);
            Some((
                if h.is_empty() { "unified" } else { h }.to_string(),
                p.to_string(),
            ))
        })
        .collect()
}

/// Every hierarchy's path of `pid` is `want`, the cgroup of `unit`.
fn assert_all_in(pid: u32, want: &str, unit: &str) {
    let cg = cgroups_of(pid);
    assert!(cg.len() >= 2, "{cg:?}");
    let wrong: Vec<_> = cg.iter().filter(|(_, p)| p != want).collect();
    if wrong.is_empty() {
        return;
    }
    // What systemd thinks of the unit, for the diagnosis.
    let props = Command::new("systemctl")
        .args([
            "show",
            unit,
            "-p",
            "Delegate,DelegateControllers,DevicePolicy,DeviceAllow,ControlGroup,Slice",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    panic!("pid {pid} of {unit} outside {want} in: {wrong:?}\n{props}");
}

/// What the kubelet's CRI stats provider and its metrics endpoint read of a
/// systemd-driver pod: the container's scope and the pod's slice, with real
/// figures (not the empty ones of a cgroupfs path that does not exist).
async fn assert_stats_of_systemd_pod(
    n: &Node,
    pod: &str,
    ctr: &str,
    slice_path: &str,
    ctr_scope: &str,
) {
    let s = n.container_stats(ctr).await;
    let cpu = s.cpu.as_ref().unwrap();
    assert!(
        val(&cpu.usage_core_nano_seconds) > 0,
        "container cpu {cpu:?}"
    );
    let mem = s.memory.as_ref().unwrap();
    assert!(val(&mem.working_set_bytes) > 0, "container memory {mem:?}");

    let p = n.pod_stats(pod).await;
    let linux = p.linux.unwrap();
    let cpu = linux.cpu.unwrap();
    assert!(val(&cpu.usage_core_nano_seconds) > 0, "pod cpu {cpu:?}");
    let pod_mem = linux.memory.unwrap();
    // The slice holds the container's scope and the helper's.
    assert!(
        val(&pod_mem.working_set_bytes) >= val(&mem.working_set_bytes)
            && val(&pod_mem.working_set_bytes) > 0,
        "pod memory {pod_mem:?} vs container {mem:?}"
    );
    // The sleeper, the helper and its PID-namespace init, at least.
    assert!(
        val(&linux.process.unwrap().process_count) >= 3,
        "pod process count"
    );
    assert_eq!(linux.containers.len(), 1);
    let c = &linux.containers[0];
    assert!(
        val(&c.memory.as_ref().unwrap().working_set_bytes) > 0,
        "{c:?}"
    );
    // A second sample gives the rates (the samples are kept under the
    // cgroup paths the list calls keep alive).
    let first = n.list_pod_stats().await;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = n.list_pod_stats().await;
    let linux = second[0].linux.as_ref().unwrap();
    assert!(
        linux.cpu.as_ref().unwrap().usage_nano_cores.is_some(),
        "pod cpu rate: {linux:?}"
    );
    assert!(
        linux.containers[0]
            .cpu
            .as_ref()
            .unwrap()
            .usage_nano_cores
            .is_some(),
        "container cpu rate: {linux:?}"
    );

    // ListPodSandboxMetrics: cAdvisor's series, `id` = the cgroup path.
    let descs = n.metric_descriptors().await;
    let id_of = |m: &cri::Metric| -> String {
        let keys = &descs[&m.name];
        let i = keys.iter().position(|k| k == "id").expect("an id label");
        m.label_values[i].clone()
    };
    let all = n.pod_metrics().await;
    assert_eq!(all.len(), 1);
    let working_set = |ms: &[cri::Metric]| -> cri::Metric {
        ms.iter()
            .find(|m| m.name == "container_memory_working_set_bytes")
            .unwrap_or_else(|| panic!("no working set in {ms:?}"))
            .clone()
    };
    let ws = working_set(&all[0].metrics);
    assert_eq!(id_of(&ws), slice_path);
    assert!(ws.value.as_ref().unwrap().value > 0, "{ws:?}");
    assert_eq!(all[0].container_metrics.len(), 1);
    let ws = working_set(&all[0].container_metrics[0].metrics);
    assert_eq!(id_of(&ws), format!("{slice_path}/{ctr_scope}"));
    assert!(ws.value.as_ref().unwrap().value > 0, "{ws:?}");
}

/// `crid debug pods` as an operator reads it: the helper alive, in the
/// pod's cgroup (its scope in the pod's slice), with its PSS.
fn assert_debug_sees_helper_in_slice(
    n: &Node,
    pod: &str,
    helper: u32,
    slice_path: &str,
    scope: &str,
) {
    let config = config_file(n);
    let p = pod_entry(&crid_debug_json(&config, &["pods"]), pod);
    assert_eq!(p["helper_pid"], helper, "{p:#}");
    assert_eq!(p["helper_alive"], true, "{p:#}");
    assert_eq!(
        p["helper_in_pod_cgroup"],
        true,
        "{p:#}\nthe kernel: {:?}",
        cgroups_of(helper)
    );
    assert_eq!(p["cgroup_path"], slice_path, "{p:#}");
    assert!(p["helper_pss_kib"].as_u64().unwrap_or(0) > 0, "{p:#}");
    // Each dir it names is the helper's scope and lists the helper, and
    // the unified and name=systemd ones are among them.
    let dirs: Vec<&str> = p["helper_cgroups"]
        .as_array()
        .expect("helper_cgroups")
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for h in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"] {
        assert!(
            dirs.contains(&format!("{h}{slice_path}/{scope}").as_str()),
            "{h}: {p:#}"
        );
    }
    for d in &dirs {
        assert!(d.ends_with(&format!("{slice_path}/{scope}")), "{d}");
        let procs = std::fs::read_to_string(format!("{d}/cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == helper.to_string()),
            "{d}: {procs}"
        );
    }
    let table = crid_debug(&config, &["pods"]);
    println!("crid debug pods:\n{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&pod[..13]))
        .unwrap_or_else(|| panic!("no row for {pod}:\n{table}"));
    assert!(row.contains(&format!("{helper} (in pod cgroup)")), "{row}");
    assert!(row.contains(slice_path), "{row}");
}

async fn pod_with_running_container(handler: &str, tag: &str) {
    in_box();
    let mut n = Node::start_with_image(ImageBuilder::busybox().unwrap(), |c| {
        c.cgroup_driver = CgroupDriver::Systemd;
    })
    .await;

    assert_eq!(
        n.c.cgroup_driver().await.unwrap(),
        cri::CgroupDriver::Systemd as i32
    );

    // As the kubelet's systemd driver names a BestEffort pod's cgroup.
    let uid = format!("{tag}0123456789");
    let slice = format!("kubepods-besteffort-pod{uid}.slice");
    let slice_path = format!("/kubepods.slice/kubepods-besteffort.slice/{slice}");
    let mut pod_cfg = n.pod_config(&format!("sysd-{tag}"));
    pod_cfg.metadata.as_mut().unwrap().uid = uid.clone();
    pod_cfg
        .linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = slice.clone();
    let pod = n.run_pod_with(&pod_cfg, handler).await;

    assert_eq!(unit_prop(&slice, "ActiveState"), "active", "{slice}");
    let scope = format!("crid-pod-helper-{pod}.scope");
    assert_eq!(unit_prop(&scope, "ActiveState"), "active", "{scope}");
    assert_eq!(unit_prop(&scope, "Slice"), slice);
    assert_eq!(unit_prop(&scope, "Delegate"), "yes");
    let helper = n.helper_pid(&pod).await;
    let helper_cg = cgroups_of(helper);
    for h in ["unified", "name=systemd"] {
        let p = &helper_cg.iter().find(|(k, _)| k == h).unwrap().1;
        assert_eq!(p, &format!("{slice_path}/{scope}"), "helper's {h}");
    }
    // The v1 controllers systemd manages on every hybrid host, realized
    // for the scope because it asks for their accounting.
    assert_eq!(unit_prop(&scope, "IOAccounting"), "yes");
    for h in ["memory", "pids", "devices", "blkio"] {
        if let Some((_, p)) = helper_cg.iter().find(|(k, _)| k == h) {
            assert_eq!(p, &format!("{slice_path}/{scope}"), "helper's {h}");
        }
    }

    let ctr = n
        .run(&pod, &pod_cfg, sh("sleeper", &n.image, "exec sleep 3600"))
        .await;
    let info = n.container_info(&ctr).await;
    let pid = info["pid"].as_u64().unwrap() as u32;
    assert!(pid > 0, "{info}");
    // runc's scope for `slice:crid:<id>`, in every hierarchy: v1's cpu,
    // memory, pids, devices... (runc joins each; systemd must not move
    // the process back to the slice) and the unified one.
    let ctr_scope = format!("crid-{ctr}.scope");
    assert_eq!(unit_prop(&ctr_scope, "ActiveState"), "active");
    assert_eq!(unit_prop(&ctr_scope, "Slice"), slice);
    assert_all_in(pid, &format!("{slice_path}/{ctr_scope}"), &ctr_scope);

    let r =
        n.c.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["echo".into(), "in-scope".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"in-scope\n"[..]));
    // Still in place after systemd saw more units come and go.
    assert_all_in(pid, &format!("{slice_path}/{ctr_scope}"), &ctr_scope);

    assert_stats_of_systemd_pod(&n, &pod, &ctr, &slice_path, &ctr_scope).await;
    assert_debug_sees_helper_in_slice(&n, &pod, helper, &slice_path, &scope);

    // As the kubelet deletes a pod: its container still running.
    let t = Instant::now();
    n.stop_pod(&pod).await.unwrap();
    n.remove_pod(&pod).await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stop+remove took {took:?}; log:\n{}",
        n.crid.log()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container process {pid} survived"
    );
    for unit in [&scope, &ctr_scope] {
        let state = unit_prop(unit, "ActiveState");
        assert!(
            state == "inactive" || state.is_empty(),
            "{unit} still {state}"
        );
    }
    n.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs systemd as PID 1: run by tests/systemd/run.sh"]
async fn helper_shim_pod_in_systemd_slice_and_scopes() {
    pod_with_running_container("", "h").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs systemd as PID 1: run by tests/systemd/run.sh"]
async fn runc_v2_pod_in_systemd_slice_and_scopes() {
    pod_with_running_container(RUNC_V2_RUNTIME_HANDLER, "r").await;
}
