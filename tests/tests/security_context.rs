//! Security context (issue 11), the parts a kubelet observes inside the
//! container: ambient capabilities, recursive read-only mounts,
//! SupplementalGroupsPolicy with the `ContainerUser` ContainerStatus reports,
//! and the features `Status` advertises for them. Every bad request is a
//! clear InvalidArgument that leaves nothing behind.
//!
//! Real runc containers through the harness [`Node`] (own registry,
//! containerd and crid per test).

use crid_e2e::images::Entry;
use crid_e2e::pods::{sh, Node};
use crid_proto::cri;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The image's /etc/passwd and /etc/group: `app` (1000:1000) is also a member
/// of `extra` (50000), a group only the image defines.
fn user_entries() -> Vec<Entry> {
    vec![
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        ),
        Entry::file("etc/group", "root:x:0:\napp:x:1000:\nextra:x:50000:app\n"),
    ]
}

async fn node() -> Node {
    Node::start(user_entries()).await
}

/// `Status` (not verbose): the features crid advertises.
async fn runtime_status(n: &mut Node) -> cri::StatusResponse {
    n.c.runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
}

/// Where the kubelet would find the log of container `name` of the pod.
fn log_file(pod_cfg: &cri::PodSandboxConfig, name: &str) -> std::path::PathBuf {
    Path::new(&pod_cfg.log_directory).join(format!("{name}.log"))
}

/// The container's CRI log as plain text (stdout and stderr content).
fn log_text(pod_cfg: &cri::PodSandboxConfig, name: &str) -> String {
    let raw = std::fs::read_to_string(log_file(pod_cfg, name)).unwrap_or_default();
    crid_e2e::pods::parse_cri_log(&raw)
        .into_iter()
        .map(|(_, _, content)| content)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` in a fresh container of `pod` and waits for it to exit;
/// returns the exit code and the log text.
async fn run_to_exit(
    n: &mut Node,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: cri::ContainerConfig,
) -> (i32, String, String) {
    let name = cfg.metadata.clone().unwrap_or_default().name;
    let id = n.run(pod, pod_cfg, cfg).await;
    let st = n.wait_exited(&id, EXIT_WAIT).await;
    (st.exit_code, log_text(pod_cfg, &name), id)
}

/// A CRI error that must leave no container in crid or containerd.
async fn assert_refused_cleanly(n: &mut Node, err: tonic::Status, needle: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(needle), "{err:?}");
    let list = n.list_containers().await;
    assert!(list.is_empty(), "{list:?}");
    n.assert_no_containerd_objects();
}

fn as_user(mut cfg: cri::ContainerConfig, uid: i64) -> cri::ContainerConfig {
    let sc = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    sc.run_as_user = Some(cri::Int64Value { value: uid });
    cfg
}

fn caps(cfg: &mut cri::ContainerConfig) -> &mut cri::Capability {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .capabilities
        .get_or_insert_with(Default::default)
}

/// `CapEff` and `CapAmb` of the container's first process, from its log.
fn cap_line(log: &str, key: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {log:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ambient_capabilities_reach_a_non_root_process() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("ambient");
    let pod = n.run_pod(&pod_cfg).await;
    let image = n.image.clone();
    // $$ is the shell runc exec'd as uid 1000: after execve a non-root
    // process keeps only its ambient capabilities.
    let script = "grep -E '^Cap(Eff|Amb)' /proc/$$/status";

    let plain = as_user(sh("plain", &image, script), 1000);
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, plain).await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(cap_line(&log, "CapEff"), "0000000000000000", "{log}");
    assert_eq!(cap_line(&log, "CapAmb"), "0000000000000000", "{log}");

    // NET_BIND_SERVICE (bit 10) is in the default set; NET_ADMIN (bit 12) is
    // added for the purpose.
    let mut amb = as_user(sh("amb", &image, script), 1000);
    caps(&mut amb).add_capabilities = vec!["NET_ADMIN".into()];
    caps(&mut amb).add_ambient_capabilities = vec!["NET_BIND_SERVICE".into(), "NET_ADMIN".into()];
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, amb).await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(cap_line(&log, "CapEff"), "0000000000001400", "{log}");
    assert_eq!(cap_line(&log, "CapAmb"), "0000000000001400", "{log}");
    n.stop_remove_pod(&pod).await;

    // Ambient outside the container's set, or not a capability: refused.
    let pod_cfg = n.pod_config("ambient-bad");
    let pod = n.run_pod(&pod_cfg).await;
    for (bad, needle) in [("SYS_ADMIN", "SYS_ADMIN"), ("FLY", "FLY")] {
        let mut cfg = as_user(sh("bad", &image, "true"), 1000);
        caps(&mut cfg).add_ambient_capabilities = vec![bad.into()];
        let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
        assert_refused_cleanly(&mut n, err, needle).await;
    }
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}

/// A host directory with a tmpfs mounted on its `sub` directory; unmounted
/// and removed on drop.
struct NestedMount {
    dir: std::path::PathBuf,
}

impl NestedMount {
    fn new(parent: &Path) -> NestedMount {
        let dir = parent.join("rro-src");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.join("sub"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.display());
        NestedMount { dir }
    }
}

impl Drop for NestedMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.join("sub"))
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_mounts_make_submounts_read_only() {
    let mut n = node().await;
    let status = runtime_status(&mut n).await;
    // runc 1.1's `features` lists `rro` and the kernel has mount_setattr.
    for h in &status.runtime_handlers {
        assert!(
            h.features
                .as_ref()
                .is_some_and(|f| f.recursive_read_only_mounts),
            "{h:?}"
        );
    }
    let src = NestedMount::new(n.dir.path());
    let pod_cfg = n.pod_config("rro");
    let pod = n.run_pod(&pod_cfg).await;
    let image = n.image.clone();
    let script = "for p in /mnt/top /mnt/sub/inner; do \
         if touch $p 2>/dev/null; then echo $p writable; else echo $p refused; fi; done";
    let mount = |rro: bool| cri::Mount {
        container_path: "/mnt".into(),
        host_path: src.dir.display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };

    let mut cfg = sh("ro", &image, script);
    cfg.mounts = vec![mount(false)];
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    // A plain read-only bind leaves the submount writable.
    assert!(log.contains("/mnt/top refused"), "{log}");
    assert!(log.contains("/mnt/sub/inner writable"), "{log}");

    let mut cfg = sh("rro", &image, script);
    cfg.mounts = vec![mount(true)];
    let (code, log, id) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("/mnt/top refused"), "{log}");
    assert!(log.contains("/mnt/sub/inner refused"), "{log}");
    let info = n.container_info(&id).await;
    let opts = info["runtimeSpec"]["mounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["destination"] == "/mnt"))
        .map(|m| m["options"].clone())
        .unwrap();
    assert!(
        opts.as_array().unwrap().iter().any(|o| o == "rro"),
        "{opts}"
    );
    n.stop_remove_pod(&pod).await;

    // Recursive read-only needs readonly and private propagation.
    let pod_cfg = n.pod_config("rro-bad");
    let pod = n.run_pod(&pod_cfg).await;
    let mut writable = mount(true);
    writable.readonly = false;
    let mut slave = mount(true);
    slave.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
    for m in [writable, slave] {
        let mut cfg = sh("bad", &image, "true");
        cfg.mounts = vec![m];
        let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
        assert_refused_cleanly(&mut n, err, "recursive_read_only").await;
    }
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
    drop(src);
}

fn groups_config(
    name: &str,
    image: &str,
    policy: cri::SupplementalGroupsPolicy,
) -> cri::ContainerConfig {
    let mut cfg = as_user(sh(name, image, "id -G; sleep 600"), 1000);
    let sc = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    sc.supplemental_groups = vec![1234];
    sc.supplemental_groups_policy = policy as i32;
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn supplemental_groups_policy_and_the_reported_container_user() {
    let mut n = node().await;
    let status = runtime_status(&mut n).await;
    assert!(
        status
            .features
            .as_ref()
            .is_some_and(|f| f.supplemental_groups_policy),
        "{status:?}"
    );
    let pod_cfg = n.pod_config("groups");
    let pod = n.run_pod(&pod_cfg).await;
    let image = n.image.clone();
    for (name, policy, want) in [
        (
            "merge",
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        (
            "strict",
            cri::SupplementalGroupsPolicy::Strict,
            vec![1000, 1234],
        ),
    ] {
        let id = n
            .run(&pod, &pod_cfg, groups_config(name, &image, policy))
            .await;
        let want_text = want
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        crid_e2e::pods::wait_log_contains(&log_file(&pod_cfg, name), &want_text, EXIT_WAIT).await;
        assert_eq!(log_text(&pod_cfg, name).trim(), want_text, "{name}");
        let st = n.status(&id).await.unwrap();
        let mut user = st.user.and_then(|u| u.linux).unwrap();
        user.supplemental_groups.sort();
        assert_eq!(
            user,
            cri::LinuxContainerUser {
                uid: 1000,
                gid: 1000,
                supplemental_groups: want.clone(),
            },
            "{name}"
        );
        // An exec'd process gets the same groups.
        let out =
            n.c.runtime
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["id".into(), "-G".into()],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want_text,
            "{name}"
        );
    }

    // A user name the image does not know: refused, nothing created.
    let mut cfg = sh("nouser", &image, "true");
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .run_as_username = "nobody-here".into();
    let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("nobody-here"), "{err:?}");
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_capability_is_refused_and_leaves_nothing() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("badcap");
    let pod = n.run_pod(&pod_cfg).await;
    let image = n.image.clone();
    let mut cfg = sh("badcap", &image, "true");
    caps(&mut cfg).add_capabilities = vec!["CAP_TIME_TRAVEL".into()];
    let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
    assert_refused_cleanly(&mut n, err, "CAP_TIME_TRAVEL").await;
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}

/// An image volume of the node's image at `/vol`, optionally one directory of it.
fn image_volume(image: &str, sub: &str) -> cri::Mount {
    cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

/// Snapshots of image volumes containerd still holds.
fn image_volume_snapshots(n: &Node) -> Vec<String> {
    n.ctr(&["snapshots", "ls"])
        .lines()
        .filter(|l| l.contains("-imgvol-"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_are_mounted_read_only_and_cleaned_up() {
    let mut n = node().await;
    let image = n.image.clone();
    let image_id = n.image_status(&image).await.id;
    let pod_cfg = n.pod_config("imgvol");
    let pod = n.run_pod(&pod_cfg).await;

    // The whole image: its files are there, executable, and read-only.
    let script = "ls /vol/bin/sh && /vol/bin/busybox echo exec-ok; \
         if touch /vol/new 2>/dev/null; then echo writable; else echo refused; fi";
    let mut cfg = sh("whole", &image, script);
    cfg.mounts = vec![image_volume(&image, "")];
    let (code, log, id) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("/vol/bin/sh"), "{log}");
    assert!(log.contains("exec-ok"), "{log}");
    assert!(log.contains("refused"), "{log}");
    let st = n.status(&id).await.unwrap();
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/vol")
        .unwrap();
    assert_eq!(
        m.image.as_ref().map(|i| i.image_ref.as_str()),
        Some(image_id.as_str())
    );
    assert!(m.readonly);

    // One directory of it: /etc of the image is /vol.
    let mut cfg = sh("sub", &image, "grep '^app:' /vol/passwd");
    cfg.mounts = vec![image_volume(&image, "etc")];
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("app:x:1000:1000"), "{log}");
    assert_eq!(image_volume_snapshots(&n).len(), 2);

    // A sub path the image lacks, a writable volume, an image never pulled:
    // refused before anything is left behind.
    n.stop_remove_pod(&pod).await;
    assert!(image_volume_snapshots(&n).is_empty());
    let pod_cfg = n.pod_config("imgvol-bad");
    let pod = n.run_pod(&pod_cfg).await;
    let mut writable = image_volume(&image, "");
    writable.readonly = false;
    for (m, code, needle) in [
        (
            image_volume(&image, "no/such/dir"),
            Code::InvalidArgument,
            "no/such/dir",
        ),
        (image_volume(&image, "../etc"), Code::InvalidArgument, ".."),
        (writable, Code::InvalidArgument, "read-only"),
        (
            image_volume("127.0.0.1:1/not/pulled:v1", ""),
            Code::NotFound,
            "not/pulled",
        ),
    ] {
        let mut cfg = sh("bad", &image, "true");
        cfg.mounts = vec![m];
        let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle), "{err:?}");
        n.assert_no_containerd_objects();
        assert!(image_volume_snapshots(&n).is_empty());
    }
    n.stop_remove_pod(&pod).await;
    assert!(
        crid_e2e::mounts_under(n.dir.path()).is_empty(),
        "{:?}",
        crid_e2e::mounts_under(n.dir.path())
    );
}

fn security_context(cfg: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The options field of the mount at `dest` in `mountinfo` text, if any.
fn mount_opts<'a>(log: &'a str, dest: &str) -> Option<&'a str> {
    log.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 5 && f[4] == dest).then(|| f[5])
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn users_no_new_privs_read_only_rootfs_masks_and_privileged_are_enforced() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("enforce");
    let pod = n.run_pod(&pod_cfg).await;
    let image = n.image.clone();

    // run_as_user + run_as_group, and no_new_privs.
    let mut cfg = sh(
        "ids",
        &image,
        "echo uid=$(id -u) gid=$(id -g); grep NoNewPrivs /proc/$$/status",
    );
    let sc = security_context(&mut cfg);
    sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    sc.run_as_group = Some(cri::Int64Value { value: 2000 });
    sc.no_new_privs = true;
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("uid=1000 gid=2000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    let (_, log, _) = run_to_exit(
        &mut n,
        &pod,
        &pod_cfg,
        sh("nnp-off", &image, "grep NoNewPrivs /proc/$$/status"),
    )
    .await;
    assert!(log.contains("NoNewPrivs:\t0"), "{log}");

    // A read-only rootfs refuses writes; the masked and read-only paths the
    // kubelet sends are applied (and none when it sends none: Unmasked).
    let script = "if touch /new 2>/dev/null; then echo rootfs-writable; else echo rootfs-ro; fi; \
         cat /proc/self/mountinfo";
    let mut cfg = sh("ro", &image, script);
    let sc = security_context(&mut cfg);
    sc.readonly_rootfs = true;
    sc.masked_paths = vec!["/proc/timer_list".into()];
    sc.readonly_paths = vec!["/proc/sys".into()];
    let (code, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("rootfs-ro"), "{log}");
    assert!(mount_opts(&log, "/proc/timer_list").is_some(), "{log}");
    assert!(
        mount_opts(&log, "/proc/sys").is_some_and(|o| o.starts_with("ro")),
        "{log}"
    );
    let (_, log, _) = run_to_exit(&mut n, &pod, &pod_cfg, sh("unmasked", &image, script)).await;
    assert!(log.contains("rootfs-writable"), "{log}");
    assert!(mount_opts(&log, "/proc/timer_list").is_none(), "{log}");
    assert!(mount_opts(&log, "/proc/sys").is_none(), "{log}");

    // Privileged needs a privileged pod.
    let mut cfg = sh("priv", &image, "true");
    security_context(&mut cfg).privileged = true;
    let err = n.create(&pod, &pod_cfg, cfg).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    n.stop_remove_pod(&pod).await;

    let mut priv_cfg = n.pod_config("privileged");
    if let Some(sc) = priv_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    let pod = n.run_pod(&priv_cfg).await;
    let script = "grep CapEff /proc/$$/status; cat /proc/self/mountinfo; \
         echo devices=$(ls /dev | wc -l)";
    let mut cfg = sh("priv", &image, script);
    let sc = security_context(&mut cfg);
    sc.privileged = true;
    sc.masked_paths = vec!["/proc/timer_list".into()];
    let (code, log, _) = run_to_exit(&mut n, &pod, &priv_cfg, cfg).await;
    assert_eq!(code, 0, "{log}");
    let cap_eff = cap_line(&log, "CapEff");
    let crid_caps = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .unwrap();
    assert_eq!(cap_eff, crid_caps, "{log}");
    assert!(
        mount_opts(&log, "/sys").is_some_and(|o| o.starts_with("rw")),
        "{log}"
    );
    assert!(mount_opts(&log, "/proc/timer_list").is_none(), "{log}");
    let devices: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("devices="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let host_devices = std::fs::read_dir("/dev").unwrap().count();
    // Every host device node (not pts/shm/mqueue/fd) is there.
    assert!(
        devices > 20 && devices + 10 >= host_devices,
        "{devices} of {host_devices}"
    );
    n.stop_remove_pod(&pod).await;
    n.assert_no_containerd_objects();
}
