//! The generated spec run by the real runc (as root, like the e2e tests): runc
//! must accept it and the container must see what the spec promises. Uses the
//! host's network/IPC namespaces so no pod is needed; busybox-static is the
//! image. Everything (runc state, cgroups, files) is removed on drop.

use super::testing::FakeRootfs;
use super::*;
use crid_proto::cri::{
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    Mount as CriMount, NamespaceMode, NamespaceOption,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Removes the runc container and the cgroups it left under `parent`.
struct Cleanup {
    runc_root: PathBuf,
    id: String,
    cgroup_parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let dir = c.path().join(self.cgroup_parent.trim_start_matches('/'));
                let _ = std::fs::remove_dir(dir.join(&self.id));
                let _ = std::fs::remove_dir(&dir);
            }
        }
        // Pure cgroup v2: directly under /sys/fs/cgroup.
        let v2 = Path::new("/sys/fs/cgroup").join(self.cgroup_parent.trim_start_matches('/'));
        let _ = std::fs::remove_dir(v2.join(&self.id));
        let _ = std::fs::remove_dir(v2);
    }
}

#[test]
fn generated_spec_runs_under_runc() {
    let dir = tempfile::Builder::new()
        .prefix("crid-test-spec-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let rootfs = d.join("bundle/rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "data"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nvideo:x:44:app\n",
    )
    .unwrap();
    std::fs::write(d.join("hosts"), "127.0.0.1 localhost pod-hosts-file\n").unwrap();
    std::fs::write(d.join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    std::fs::write(d.join("hostname"), "spec-test\n").unwrap();
    std::fs::create_dir(d.join("data")).unwrap();
    std::fs::write(d.join("data/file"), "from-host\n").unwrap();

    let id = format!("crid-spec-{}", std::process::id());
    let cleanup = Cleanup {
        runc_root: d.join("runc"),
        id: id.clone(),
        cgroup_parent: format!("/crid-test-spec-{}", std::process::id()),
    };
    let sandbox = SandboxFacts {
        sandbox_id: "sb".into(),
        hostname: "spec-test".into(),
        etc_hosts_path: Some(d.join("hosts")),
        resolv_conf_path: Some(d.join("resolv.conf")),
        hostname_path: Some(d.join("hostname")),
        cgroup_parent: cleanup.cgroup_parent.clone(),
        host_network: true,
        host_ipc: true,
        ..Default::default()
    };
    let script = "id; grep CapBnd /proc/self/status; cat /etc/hosts /etc/hostname /data/file; \
                  echo x > /data/new && echo data-writable; \
                  echo x > /rootfs-write && echo rootfs-writable; \
                  echo MODE=$MODE; pwd; echo done";
    let config = ContainerConfig {
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec![script.into()],
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "runc".into(),
        }],
        working_dir: "/data".into(),
        mounts: vec![CriMount {
            container_path: "/data".into(),
            host_path: d.join("data").display().to_string(),
            readonly: true,
            ..Default::default()
        }],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 128,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_username: "app".into(),
                readonly_rootfs: true,
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    network: NamespaceMode::Node as i32,
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let pod = PodSandboxConfig::default();
    let host_facts = host::read_host_facts().unwrap();
    let inputs = SpecInputs {
        container_id: &id,
        config: &config,
        sandbox_config: &pod,
        image_config: None,
        image_name: "busybox",
        sandbox: &sandbox,
        host: &host_facts,
        target_pid_ns_path: None,
    };
    let spec = generate(&inputs, &SystemHost, &user::RootfsDir(rootfs.clone())).unwrap();
    // The fake reads the same files: both views must agree on the user.
    let fake = FakeRootfs::new(
        Some(&std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap()),
        Some(&std::fs::read_to_string(rootfs.join("etc/group")).unwrap()),
    );
    let via_fake = generate(&inputs, &SystemHost, &fake).unwrap();
    assert_eq!(
        spec.process().as_ref().map(|p| p.user().clone()),
        via_fake.process().as_ref().map(|p| p.user().clone())
    );
    spec.save(d.join("bundle/config.json")).unwrap();

    let mut child = Command::new("runc")
        .arg("--root")
        .arg(&cleanup.runc_root)
        .args(["run", "--bundle"])
        .arg(d.join("bundle"))
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runc is installed (Debian package runc)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runc run did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runc failed: {stderr}\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "uid=1000(app) gid=1000(app) groups=44(video),1000(app)",
        "{stdout}"
    );
    // containerd's 14 default capabilities.
    assert_eq!(lines[1], "CapBnd:\t00000000a80425fb", "{stdout}");
    assert!(stdout.contains("pod-hosts-file"), "{stdout}");
    assert!(stdout.contains("spec-test\nfrom-host"), "{stdout}");
    assert!(
        !stdout.contains("data-writable"),
        "read-only mount: {stdout}"
    );
    assert!(
        !stdout.contains("rootfs-writable"),
        "read-only rootfs: {stdout}"
    );
    assert!(stdout.contains("MODE=runc\n/data\ndone"), "{stdout}");
    assert!(!d.join("data/new").exists());
    drop(cleanup);
    let parent =
        Path::new("/sys/fs/cgroup/memory").join(format!("crid-test-spec-{}", std::process::id()));
    assert!(!parent.exists(), "cgroup left behind: {}", parent.display());
}
