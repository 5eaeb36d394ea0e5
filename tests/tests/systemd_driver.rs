//! The systemd cgroup driver against a real systemd (issue 15): run only
//! inside the box of tests/systemd/box.sh, where systemd 252 is PID 1 of
//! its own namespaces (`bash tests/systemd/run.sh` starts it, runs this
//! suite with `--ignored` and checks the host is unchanged). Asserted as a
//! kubelet with the systemd driver would see it, plus what systemd and the
//! kernel say: the pod's slice, the helper's delegated scope, every
//! cgroup hierarchy of a container's process, and stopping a pod with a
//! running container.

use crid_common::config::{CgroupDriver, RUNC_V2_RUNTIME_HANDLER};
use crid_e2e::images::ImageBuilder;
use crid_e2e::pods::{sh, Node};
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
