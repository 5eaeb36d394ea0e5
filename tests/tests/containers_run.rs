//! Containers that run (issue 5): runtime handlers, UpdateContainerResources,
//! PID namespace mode TARGET, and the rest of the list (command/args
//! table, env, working dir, read-only mounts, OOM kills, what the containers
//! of one pod share, leaks), with real runc, real cgroups (v1 here) and the
//! pod's helper. Echo/exit codes/StopContainer are in `container_lifecycle`.
//!
//! Each test has its own registry, containerd and crid (the harness
//! [`Node`]) and, where a pod needs its own network, its own bridge and
//! subnet; each asserts that nothing of its pods is left behind.

use crid_common::config::{RuntimeHandlerConfig, RUNC_V2_RUNTIME_HANDLER, RUNC_V2_RUNTIME_TYPE};
use crid_e2e::images::ImageBuilder;
use crid_e2e::net::TestNet;
use crid_e2e::pods::Node;
use crid_e2e::{mounts_under, test_dir, wait_for, CridProcess};
use crid_proto::cri;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

/// Entrypoint + Cmd of the second test image: the script prints `[$0|$*]`
/// into /out/argv, so the kubelet's command/args rules can be read back.
const EP_SCRIPT: &str = "echo \"[$0|$*]\" > /out/argv";

/// How long a container may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// A [`Node`] plus what these tests add, dropped in field order: the node
/// (crid, containerd, ...), then the bridge.
struct World {
    n: Node,
    _net: Option<TestNet>,
    /// busybox with Entrypoint `sh -c EP_SCRIPT ep` and Cmd `cmd1`.
    ep_image: String,
}

impl Deref for World {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.n
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.n
    }
}

/// What a test needs besides the defaults.
#[derive(Default)]
struct Opts {
    /// A CNI network with this number (unique per test).
    net: Option<u8>,
    /// Extra `[runtimes.<name>]` entries.
    runtimes: Vec<(&'static str, RuntimeHandlerConfig)>,
}

impl World {
    /// A node whose image is busybox with env `FROM_IMAGE=image`,
    /// `KEEP=image` and WorkingDir /srv, plus the Entrypoint/Cmd image.
    async fn start(opts: Opts) -> World {
        let mut net = None;
        let n = Node::start_with_image(
            ImageBuilder::busybox().unwrap().with_config(|c| {
                c.env.push("FROM_IMAGE=image".into());
                c.env.push("KEEP=image".into());
                c.working_dir = Some("/srv".into());
            }),
            |config| {
                net = opts.net.map(|n| TestNet::new(n, config, None));
                for (name, h) in opts.runtimes {
                    config.runtimes.insert(name.to_string(), h);
                }
            },
        )
        .await;
        let mut w = World {
            n,
            _net: net,
            ep_image: String::new(),
        };
        let ep = ImageBuilder::busybox()
            .unwrap()
            .with_config(|c| {
                c.entrypoint = Some(vec![
                    "sh".into(),
                    "-c".into(),
                    EP_SCRIPT.into(),
                    "ep".into(),
                ]);
                c.cmd = Some(vec!["cmd1".into()]);
            })
            .build()
            .unwrap();
        ep.push(&w.reg.target(), "test/ep", &["v1"]).unwrap();
        w.ep_image = format!("{}/test/ep:v1", w.reg.host());
        let image = w.ep_image.clone();
        w.c.image
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(&image)),
                ..Default::default()
            })
            .await
            .unwrap();
        w
    }

    /// The runtime name and runc options containerd holds for container `id`
    /// (`ctr` prints the options as an undecoded Any).
    fn runc_options(&self, id: &str) -> (String, crid_proto::runc::Options) {
        use base64::Engine;
        let info: serde_json::Value =
            serde_json::from_str(&self.ctr(&["containers", "info", id])).unwrap();
        let any = &info["Runtime"]["Options"];
        assert_eq!(any["type_url"], "containerd.runc.v1.Options", "{info}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(any["value"].as_str().unwrap())
            .unwrap();
        let opts = prost::Message::decode(bytes.as_slice()).unwrap();
        (info["Runtime"]["Name"].as_str().unwrap().to_string(), opts)
    }

    /// A host directory for a container's `/out` mount.
    fn out_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("out").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs a pod with `handler`; host network unless `own_net`.
    async fn run_pod_with(
        &mut self,
        name: &str,
        own_net: bool,
        handler: &str,
    ) -> Result<(String, cri::PodSandboxConfig), tonic::Status> {
        let mut cfg = self.pod_config(name);
        if own_net {
            let linux = cfg.linux.get_or_insert_with(Default::default);
            let sc = linux.security_context.get_or_insert_with(Default::default);
            sc.namespace_options
                .get_or_insert_with(Default::default)
                .network = cri::NamespaceMode::Pod as i32;
        }
        let id = self
            .c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: handler.into(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, cfg))
    }

    async fn update(
        &mut self,
        id: &str,
        linux: cri::LinuxContainerResources,
    ) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.into(),
                linux: Some(linux),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// Nothing of `pods` is left: containerd containers, tasks and active
    /// snapshots, crid records, mounts under the test dir, cgroups, helper
    /// and shim processes.
    async fn assert_nothing_left(&mut self, pods: &[&str]) {
        self.n.assert_no_container_left().await;
        assert!(
            mounts_under(self.dir.path()).is_empty(),
            "{:?}",
            mounts_under(self.dir.path())
        );
        for pod in pods {
            for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
                let p = h.path().join("crid").join(pod);
                assert!(!p.exists(), "{} left", p.display());
            }
        }
        // Shims and helpers exit asynchronously after their last task.
        let sock = self.ctrd.socket().display().to_string();
        let needle = self.dir.path().display().to_string();
        let procs = wait_for(Duration::from_secs(10), || {
            let left = processes_matching(&[&sock, &needle]);
            async move { left.is_empty().then_some(()) }
        })
        .await;
        assert!(
            procs.is_some(),
            "{:?}",
            processes_matching(&[&sock, &needle])
        );
    }
}

/// (pid, cmdline) of every live process whose command line contains one of
/// `needles` and names a shim or pod helper.
fn processes_matching(needles: &[&str]) -> Vec<(i32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let ours = cmd.contains("containerd-shim") || cmd.contains("crid-pod-helper");
        if ours && needles.iter().any(|n| cmd.contains(n)) && !gone(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// The process is gone or a zombie (exited, not yet reaped).
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A container of `image` running `sh -c script`, with `/out` bound to `out`.
fn sh(name: &str, image: &str, script: &str, out: Option<&Path>) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        mounts: out
            .map(|o| {
                vec![cri::Mount {
                    container_path: "/out".into(),
                    host_path: o.display().to_string(),
                    ..Default::default()
                }]
            })
            .into_iter()
            .flatten()
            .collect(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// The runc binary the machine has, found on PATH.
fn runc_path() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
        .expect("runc on PATH")
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_handlers_choose_the_runc_binary_and_root() {
    let probe = test_dir();
    let root = probe.path().join("runc-fast");
    let mut w = World::start(Opts {
        runtimes: vec![(
            "fast",
            RuntimeHandlerConfig {
                // containerd's runc shim: its options carry the shim cgroup.
                runtime_type: RUNC_V2_RUNTIME_TYPE.into(),
                binary_name: runc_path().display().to_string(),
                root: root.clone(),
                ..Default::default()
            },
        )],
        ..Default::default()
    })
    .await;

    // Status lists the handlers a RuntimeClass may name.
    let st =
        w.c.runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, vec!["", "fast", "runc", "runc-v2"]);

    // An unknown handler is refused, naming the known ones; nothing is made.
    let err = w.run_pod_with("h-bad", false, "kata").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("no runtime for \"kata\""), "{err:?}");
    assert!(err.message().contains("\"fast\""), "{err:?}");

    // A pod with the handler: its containers get that binary and root.
    let pod = w.run_pod_with("h-fast", false, "fast").await.unwrap();
    let image = w.image.clone();
    let out = w.out_dir("fast");
    let id = w
        .create(
            &pod.0,
            &pod.1,
            sh("a", &image, "echo ran > /out/ran; sleep 60", Some(&out)),
        )
        .await
        .unwrap();
    let (name, opts) = w.runc_options(&id);
    assert_eq!(name, "io.containerd.runc.v2");
    assert_eq!(opts.binary_name, runc_path().display().to_string());
    assert_eq!(opts.root, root.display().to_string());
    assert_eq!(opts.shim_cgroup, format!("/crid/{}/crid-shim", pod.0));
    // It runs, and runc keeps its state under the handler's root
    // (`<root>/<containerd namespace>/<id>`).
    w.start_container(&id).await.unwrap();
    assert_eq!(wait_file(&out.join("ran")).await, "ran\n");
    assert!(root.join("crid").join(&id).join("state.json").is_file());
    // The default pod keeps plain runc.
    let plain = w.run_pod_with("h-default", false, "").await.unwrap();
    let id2 = w
        .create(&plain.0, &plain.1, sh("b", &image, "true", None))
        .await
        .unwrap();
    let (_, opts2) = w.runc_options(&id2);
    assert_eq!(
        (opts2.binary_name.as_str(), opts2.root.as_str()),
        ("runc", "")
    );

    w.stop_remove_pod(&pod.0).await;
    w.stop_remove_pod(&plain.0).await;
    w.assert_nothing_left(&[&pod.0, &plain.0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_resources_of_a_created_container_is_kept_in_its_spec() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod_with("upd-created", false, "").await.unwrap();
    let image = w.image.clone();
    let mut cfg = sh("a", &image, "sleep 60", None);
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(&pod.0, &pod.1, cfg).await.unwrap();
    let res =
        |st: &cri::ContainerStatus| st.resources.as_ref().and_then(|r| r.linux.clone()).unwrap();
    let before = res(&w.status(&id).await.unwrap());
    assert_eq!(before.memory_limit_in_bytes, 64 << 20);
    assert_eq!(before.cpu_shares, 256);

    w.update(
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let after = res(&w.status(&id).await.unwrap());
    assert_eq!(after.memory_limit_in_bytes, 96 << 20);
    assert_eq!(after.cpu_quota, 50_000);
    assert_eq!(after.cpu_period, 100_000);
    assert_eq!(after.cpu_shares, 256, "fields not in the update are kept");
    // containerd holds the new spec (what the task is created from).
    let info: serde_json::Value =
        serde_json::from_str(&w.ctr(&["containers", "info", &id])).unwrap();
    let mem = &info["Spec"]["linux"]["resources"]["memory"];
    assert_eq!(mem["limit"], 96 << 20, "{info}");
    // The record too: after a crid restart the status still says so.
    let config = w.crid.config.clone();
    w.crid.stop();
    w.crid = CridProcess::start(config).await.unwrap();
    w.c = w.crid.clients().await.unwrap();
    assert_eq!(
        res(&w.status(&id).await.unwrap()).memory_limit_in_bytes,
        96 << 20
    );

    // Bad input.
    let err = w
        .update(
            &id,
            cri::LinuxContainerResources {
                cpu_quota: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = w.update("nosuchcontainer", Default::default()).await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound);

    // Started afterwards, the task runs with the updated limits.
    w.start_container(&id).await.unwrap();
    let cg = Path::new("/sys/fs/cgroup");
    let rel = Path::new("crid").join(&pod.0).join(&id);
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(
        read(cg.join("memory").join(&rel).join("memory.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        read(cg.join("cpu").join(&rel).join("cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(read(cg.join("cpu").join(&rel).join("cpu.shares")), "256");

    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
}

/// A container config whose PID namespace mode is TARGET `target`.
fn targeting(name: &str, image: &str, target: &str, out: Option<&Path>) -> cri::ContainerConfig {
    let mut cfg = sh(
        name,
        image,
        "{ tr '\\0' ' ' < /proc/1/cmdline; echo; } > /out/pid1; sleep 60",
        out,
    );
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_target_errors() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod_with("tgt-err", false, "").await.unwrap();
    let other = w.run_pod_with("tgt-other", false, "").await.unwrap();
    let image = w.image.clone();
    let created = w
        .create(&pod.0, &pod.1, sh("t", &image, "sleep 60", None))
        .await
        .unwrap();
    let elsewhere = w
        .create(&other.0, &other.1, sh("t", &image, "sleep 60", None))
        .await
        .unwrap();

    let err = w
        .create(
            &pod.0,
            &pod.1,
            targeting("d1", &image, "nosuchcontainer", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = w
        .create(&pod.0, &pod.1, targeting("d2", &image, &created, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{err:?}");
    let err = w
        .create(&pod.0, &pod.1, targeting("d3", &image, &elsewhere, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    w.stop_remove_pod(&pod.0).await;
    w.stop_remove_pod(&other.0).await;
    w.assert_nothing_left(&[&pod.0, &other.0]).await;
}

/// Waits (up to 30 s) for `path` to hold a complete line; its content.
async fn wait_file(path: &Path) -> String {
    let p = path.to_path_buf();
    wait_for(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        async move { text.ends_with('\n').then_some(text) }
    })
    .await
    .unwrap_or_else(|| panic!("{} was not written", path.display()))
}

fn in_mode(mut cfg: cri::ContainerConfig, pid: cri::NamespaceMode) -> cri::ContainerConfig {
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = pid as i32;
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn command_args_env_working_dir_and_read_only_mount() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod_with("table", false, "").await.unwrap();
    let image = w.image.clone();
    let ep = w.ep_image.clone();
    // (command, args, what EP_SCRIPT or the command prints).
    let cmd_script = "echo \"[cmd:$0|$*]\" > /out/argv";
    let table: [(Vec<&str>, Vec<&str>, &str); 4] = [
        // Neither: the image's Entrypoint + Cmd.
        (vec![], vec![], "[ep|cmd1]"),
        // Args alone replace Cmd.
        (vec![], vec!["a1", "a2"], "[ep|a1 a2]"),
        // Command replaces Entrypoint and drops Cmd.
        (vec!["sh", "-c", cmd_script, "c0"], vec![], "[cmd:c0|]"),
        // Command + args.
        (
            vec!["sh", "-c", cmd_script, "c0"],
            vec!["b1"],
            "[cmd:c0|b1]",
        ),
    ];
    for (i, (command, args, want)) in table.iter().enumerate() {
        let out = w.out_dir(&format!("case{i}"));
        let mut cfg = sh(&format!("case{i}"), &ep, "", Some(&out));
        cfg.command = command.iter().map(|s| s.to_string()).collect();
        cfg.args = args.iter().map(|s| s.to_string()).collect();
        let id = w.create(&pod.0, &pod.1, cfg).await.unwrap();
        w.start_container(&id).await.unwrap();
        assert_eq!(w.wait_exited(&id, EXIT_WAIT).await.exit_code, 0, "case {i}");
        assert_eq!(wait_file(&out.join("argv")).await.trim(), *want, "case {i}");
    }

    // Env merged over the image's, the image's working dir, then an override;
    // a read-only host path cannot be written.
    let out = w.out_dir("env");
    let ro = w.out_dir("ro-src");
    std::fs::write(ro.join("given"), "from host\n").unwrap();
    let script = "env | sort > /out/env.tmp; mv /out/env.tmp /out/env; pwd > /out/pwd; \
         cat /ro/given > /out/ro-read; \
         if touch /ro/new 2>/out/ro-err; then echo writable; else echo refused; fi > /out/ro";
    let mut cfg = sh("env", &image, script, Some(&out));
    cfg.envs = vec![
        cri::KeyValue {
            key: "KEEP".into(),
            value: "container".into(),
        },
        cri::KeyValue {
            key: "NEW".into(),
            value: "1".into(),
        },
    ];
    cfg.mounts.push(cri::Mount {
        container_path: "/ro".into(),
        host_path: ro.display().to_string(),
        readonly: true,
        ..Default::default()
    });
    let id = w.create(&pod.0, &pod.1, cfg).await.unwrap();
    w.start_container(&id).await.unwrap();
    w.wait_exited(&id, EXIT_WAIT).await;
    let env = wait_file(&out.join("env")).await;
    let env: Vec<&str> = env.lines().collect();
    for want in [
        "FROM_IMAGE=image",
        "KEEP=container",
        "NEW=1",
        "HOSTNAME=table",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    assert!(!env.contains(&"KEEP=image"), "{env:?}");
    assert_eq!(wait_file(&out.join("pwd")).await, "/srv\n");
    assert_eq!(wait_file(&out.join("ro-read")).await, "from host\n");
    assert_eq!(wait_file(&out.join("ro")).await, "refused\n");
    assert!(!ro.join("new").exists());

    let out = w.out_dir("wd");
    let mut cfg = sh("wd", &image, "pwd > /out/pwd", Some(&out));
    cfg.working_dir = "/tmp".into();
    let id = w.create(&pod.0, &pod.1, cfg).await.unwrap();
    w.start_container(&id).await.unwrap();
    w.wait_exited(&id, EXIT_WAIT).await;
    assert_eq!(wait_file(&out.join("pwd")).await, "/tmp\n");

    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_the_memory_limit_is_oom_killed() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod_with("oom", false, "").await.unwrap();
    let image = w.image.clone();
    // busybox dd allocates its block (64 MiB) and fills it from /dev/zero:
    // far over the 16 MiB limit, with no swap allowed (swap = limit).
    let mut cfg = sh(
        "hog",
        &image,
        "exec dd if=/dev/zero of=/dev/null bs=64M count=4",
        None,
    );
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(&pod.0, &pod.1, cfg).await.unwrap();
    w.start_container(&id).await.unwrap();
    let s = w.wait_exited(&id, EXIT_WAIT).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137, "{s:?}");

    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
}

/// Host pid of container `id`'s task, from `ctr tasks ls`.
fn task_pid(w: &World, id: &str) -> u32 {
    w.ctr(&["tasks", "ls"])
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no task for {id}: {}", w.ctr(&["tasks", "ls"])))
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_pod_share_ip_shm_and_one_shim_and_nothing_leaks() {
    // The default handler: the pod helper is the shim (or containerd's runc
    // shim under CRID_TEST_RUNC_RUNTIME_TYPE=io.containerd.runc.v2).
    pair_shares_ip_shm_and_one_shim(201, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_runc_v2_pod_share_ip_shm_and_one_runc_shim() {
    pair_shares_ip_shm_and_one_shim(202, RUNC_V2_RUNTIME_HANDLER).await;
}

/// Two containers of one pod (network `net`, runtime handler `handler`)
/// see the pod's IP and /dev/shm, are served by one shim (the pod helper
/// with `io.containerd.crid.v1`, one `containerd-shim-runc-v2` with
/// `io.containerd.runc.v2`), and removing the pod ends all of it.
async fn pair_shares_ip_shm_and_one_shim(net: u8, handler: &str) {
    let mut w = World::start(Opts {
        net: Some(net),
        ..Default::default()
    })
    .await;
    let helper_shim = crid_e2e::helper_is_shim(&w.crid.config, handler);
    let pod = w.run_pod_with("pair", true, handler).await.unwrap();
    let pod_ip =
        w.c.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.0.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .network
            .unwrap()
            .ip;
    assert!(pod_ip.starts_with(&format!("10.244.{net}.")), "{pod_ip}");
    let image = w.image.clone();
    let (out_a, out_b) = (w.out_dir("a"), w.out_dir("b"));
    let show_ip = "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1";
    let a = w
        .create(
            &pod.0,
            &pod.1,
            sh(
                "a",
                &image,
                &format!("{show_ip} > /out/ip; echo token-a > /dev/shm/token; sleep 600"),
                Some(&out_a),
            ),
        )
        .await
        .unwrap();
    let b = w
        .create(
            &pod.0,
            &pod.1,
            sh(
                "b",
                &image,
                &format!(
                    "{show_ip} > /out/ip; until [ -s /dev/shm/token ]; do sleep 0.1; done; \
                     cat /dev/shm/token > /out/shm; sleep 600"
                ),
                Some(&out_b),
            ),
        )
        .await
        .unwrap();
    w.start_container(&a).await.unwrap();
    w.start_container(&b).await.unwrap();
    assert_eq!(wait_file(&out_a.join("ip")).await.trim(), pod_ip);
    assert_eq!(wait_file(&out_b.join("ip")).await.trim(), pod_ip);
    assert_eq!(wait_file(&out_b.join("shm")).await, "token-a\n");

    // One shim for the pod, and both tasks run.
    let (pa, pb) = (task_pid(&w, &a), task_pid(&w, &b));
    let sock = w.ctrd.socket().display().to_string();
    let runc_shims: Vec<_> = processes_matching(&[&sock])
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd-shim-runc-v2"))
        .collect();
    let shim = if helper_shim {
        // The pod's helper: no containerd-shim-runc-v2 exists for this
        // containerd, and both containers are the helper's children.
        assert_eq!(runc_shims, vec![], "a runc shim for a helper-shim pod");
        let helper = crid_e2e::bench::helper_pid(&mut w.c, &pod.0).await.unwrap();
        for p in [pa, pb] {
            assert_eq!(crid_e2e::parent_pid(p), Some(helper), "parent of {p}");
        }
        helper
    } else {
        // Exactly one containerd-shim-runc-v2, the parent of both.
        assert_eq!(runc_shims.len(), 1, "{runc_shims:?}");
        let shim = runc_shims[0].0 as u32;
        for p in [pa, pb] {
            assert_eq!(crid_e2e::parent_pid(p), Some(shim), "parent of {p}");
        }
        shim
    };

    // Removing the pod with both containers running leaves nothing.
    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
    for p in [pa, pb, shim] {
        assert!(gone(p as i32), "process {p} still alive");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn running_container_update_pid_target_and_forced_remove() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod_with("live", false, "").await.unwrap();
    let image = w.image.clone();
    // A target with its own PID namespace: `sleep 600` is its pid 1.
    let mut cfg = in_mode(
        sh("target", &image, "exec sleep 600", None),
        cri::NamespaceMode::Container,
    );
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let target = w.create(&pod.0, &pod.1, cfg).await.unwrap();
    w.start_container(&target).await.unwrap();

    // The cgroup limit follows UpdateContainerResources (cgroup v1 path).
    let limit = Path::new("/sys/fs/cgroup/memory/crid")
        .join(&pod.0)
        .join(&target)
        .join("memory.limit_in_bytes");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(&limit), (64u64 << 20).to_string());
    w.update(
        &target,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(read(&limit), (128u64 << 20).to_string());
    let quota = Path::new("/sys/fs/cgroup/cpu/crid")
        .join(&pod.0)
        .join(&target)
        .join("cpu.cfs_quota_us");
    assert_eq!(read(&quota), "20000");
    let st = w.status(&target).await.unwrap();
    let r = st.resources.unwrap().linux.unwrap();
    assert_eq!((r.memory_limit_in_bytes, r.cpu_quota), (128 << 20, 20_000));
    // A value the kernel refuses leaves the old limit in place.
    let err = w
        .update(
            &target,
            cri::LinuxContainerResources {
                cpuset_cpus: "4096".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("tasks.update"), "{err:?}");
    assert_eq!(read(&limit), (128u64 << 20).to_string());
    let info: serde_json::Value =
        serde_json::from_str(&w.ctr(&["containers", "info", &target])).unwrap();
    assert!(
        info["Spec"]["linux"]["resources"]["cpu"]["cpus"].is_null(),
        "the old spec is put back: {info}"
    );

    // PID TARGET: the new container's pid 1 is the target's `sleep 600`.
    let out = w.out_dir("dbg");
    let dbg = w
        .create(
            &pod.0,
            &pod.1,
            targeting("debug", &image, &target, Some(&out)),
        )
        .await
        .unwrap();
    w.start_container(&dbg).await.unwrap();
    assert_eq!(wait_file(&out.join("pid1")).await, "sleep 600 \n");

    // RemoveContainer of a running container stops and removes it.
    let pid = task_pid(&w, &target);
    w.c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: target.clone(),
        })
        .await
        .unwrap();
    assert_eq!(w.status(&target).await.unwrap_err().code(), Code::NotFound);
    assert!(!w.ctr(&["containers", "ls", "-q"]).contains(&target));
    let gone = wait_for(Duration::from_secs(10), || async move {
        gone(pid as i32).then_some(())
    })
    .await;
    assert!(gone.is_some(), "target process {pid} still running");

    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
}
