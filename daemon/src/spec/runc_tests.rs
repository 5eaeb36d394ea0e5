//! Generated specs run by the real runc (as root, like the e2e tests): runc
//! must accept them and the container must see what the spec promises. The
//! host's network/IPC namespaces are used so no pod is needed; busybox-static
//! is the image. Everything (runc state, cgroups, files) is removed on drop.

use super::testing::FakeRootfs;
use super::*;
use crid_proto::cri::{
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount as CriMount, NamespaceMode,
    NamespaceOption,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bundle with a busybox rootfs and pod files; removes the runc container and
/// the cgroups it left on drop.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
    cgroup_parent: String,
}

impl Bundle {
    fn new(name: &str) -> Bundle {
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
        let pid = std::process::id();
        Bundle {
            dir,
            id: format!("crid-spec-{name}-{pid}"),
            cgroup_parent: format!("/crid-test-spec-{name}-{pid}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn rootfs(&self) -> PathBuf {
        self.path().join("bundle/rootfs")
    }

    /// A host-network, host-IPC pod whose files live in the bundle dir.
    fn sandbox(&self) -> SandboxFacts {
        let d = self.path();
        SandboxFacts {
            sandbox_id: "sb".into(),
            hostname: "spec-test".into(),
            etc_hosts_path: Some(d.join("hosts")),
            resolv_conf_path: Some(d.join("resolv.conf")),
            hostname_path: Some(d.join("hostname")),
            cgroup_parent: self.cgroup_parent.clone(),
            host_network: true,
            host_ipc: true,
            ..Default::default()
        }
    }

    /// Generates the spec with the real host and rootfs views and runs it;
    /// returns stdout (fails the test if runc fails or hangs).
    fn run(&self, config: &ContainerConfig, pod: &PodSandboxConfig) -> String {
        let sandbox = self.sandbox();
        let host_facts = host::read_host_facts().unwrap();
        let inputs = SpecInputs {
            container_id: &self.id,
            config,
            sandbox_config: pod,
            image_config: None,
            image_name: "busybox",
            sandbox: &sandbox,
            host: &host_facts,
            target_pid_ns_path: None,
            recursive_read_only: false,
            rootfs_path: None,
        };
        let spec = generate(&inputs, &SystemHost, &user::RootfsDir(self.rootfs())).unwrap();
        // The fake reading the same files must agree on the user.
        let rd = |f: &str| std::fs::read_to_string(self.rootfs().join(f)).unwrap();
        let fake = FakeRootfs::new(Some(&rd("etc/passwd")), Some(&rd("etc/group")));
        let via_fake = generate(&inputs, &SystemHost, &fake).unwrap();
        assert_eq!(
            spec.process().as_ref().map(|p| p.user().clone()),
            via_fake.process().as_ref().map(|p| p.user().clone())
        );
        spec.save(self.path().join("bundle/config.json")).unwrap();

        let mut child = Command::new("runc")
            .arg("--root")
            .arg(self.path().join("runc"))
            .args(["run", "--bundle"])
            .arg(self.path().join("bundle"))
            .arg(&self.id)
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
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "runc failed: {stderr}\n{stdout}");
        stdout
    }

    /// This bundle's cgroup parent in the v1 memory hierarchy (or v2 root).
    fn memory_cgroup_parent(&self) -> PathBuf {
        let rel = self.cgroup_parent.trim_start_matches('/');
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.is_dir() {
            v1.join(rel)
        } else {
            Path::new("/sys/fs/cgroup").join(rel)
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.path().join("runc"))
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let rel = self.cgroup_parent.trim_start_matches('/');
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(ctrls.flatten().map(|c| c.path()));
        }
        for root in roots {
            let _ = std::fs::remove_dir(root.join(rel).join(&self.id));
            let _ = std::fs::remove_dir(root.join(rel));
        }
    }
}

fn sc(pid: NamespaceMode) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: pid as i32,
            network: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn generated_spec_runs_under_runc() {
    let b = Bundle::new("plain");
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
            host_path: b.path().join("data").display().to_string(),
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
                ..sc(NamespaceMode::Container)
            }),
        }),
        ..Default::default()
    };
    let stdout = b.run(&config, &PodSandboxConfig::default());
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
    assert!(!b.path().join("data/new").exists());
    let parent = b.memory_cgroup_parent();
    drop(b);
    assert!(!parent.exists(), "cgroup left behind: {}", parent.display());
}

#[test]
fn privileged_spec_runs_under_runc() {
    let b = Bundle::new("priv");
    // A host device runc would not create by itself.
    let runc_defaults = [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "console",
    ];
    let extra = devices::system_host_devices()
        .unwrap()
        .into_iter()
        .find(|n| {
            n.path.parent() == Some(Path::new("/dev"))
                && !runc_defaults.iter().any(|d| n.path.ends_with(d))
        })
        .expect("the host has a device beyond runc's defaults");
    let script = format!(
        "grep -E 'CapBnd|CapEff' /proc/self/status; \
         ls {} > /dev/null && echo has-host-devices; \
         grep -E ' /sys sysfs' /proc/mounts; echo done",
        extra.path.display()
    );
    let config = ContainerConfig {
        command: vec!["/bin/sh".into(), "-c".into(), script],
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..sc(NamespaceMode::Container)
            }),
        }),
        ..Default::default()
    };
    let pod = PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stdout = b.run(&config, &pod);
    // Every capability crid holds, no more (runc could not grant more).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = host::cap_eff_from_status(&status).unwrap();
    let own_hex = format!("{own:016x}");
    assert!(
        stdout.contains(&format!("CapBnd:\t{own_hex}")),
        "{own_hex}: {stdout}"
    );
    assert!(
        stdout.contains(&format!("CapEff:\t{own_hex}")),
        "{own_hex}: {stdout}"
    );
    assert!(
        stdout.contains("has-host-devices"),
        "{}: {stdout}",
        extra.path.display()
    );
    // /sys is mounted read-write.
    let sys = stdout
        .lines()
        .find(|l| l.starts_with("sysfs /sys "))
        .unwrap_or_else(|| panic!("no /sys line: {stdout}"));
    assert!(sys.contains(" rw,"), "{sys}");
    assert!(stdout.ends_with("done\n"), "{stdout}");
}
