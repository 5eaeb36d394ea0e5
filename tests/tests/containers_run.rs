//! Containers that run (issue 5): runtime handlers, UpdateContainerResources,
//! PID namespace mode TARGET, and the life of a container as the kubelet
//! sees it, with real runc, real cgroups (v1 here) and the pod's helper.
//!
//! Each test has its own registry, containerd, crid and (where a pod needs
//! its own network) its own bridge and subnet, and asserts that nothing of
//! its pods is left behind.

use crid_common::config::RuntimeHandlerConfig;
use crid_e2e::images::ImageBuilder;
use crid_e2e::net::TestNet;
use crid_e2e::{mounts_under, test_dir, wait_for, CridProcess, PrivateContainerd, Registry};
use crid_proto::cri;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

/// Entrypoint + Cmd of the second test image: the script prints `[$0|$*]`
/// into /out/argv, so the kubelet's command/args rules can be read back.
const EP_SCRIPT: &str = "echo \"[$0|$*]\" > /out/argv";

/// One test's world, dropped in field order: clients, crid, the bridge,
/// containerd, registry, dir.
struct World {
    c: crid_e2e::CriClients,
    crid: CridProcess,
    _net: Option<TestNet>,
    ctrd: PrivateContainerd,
    _reg: Registry,
    /// busybox, Cmd `sh`, env `FROM_IMAGE=image`, `KEEP=image`, WorkingDir /srv.
    image: String,
    /// busybox with Entrypoint `sh -c EP_SCRIPT ep` and Cmd `cmd1`.
    ep_image: String,
    dir: tempfile::TempDir,
}

impl Drop for World {
    /// A failed test leaves pods behind: clean them up (runs only on
    /// failure; passing tests assert their own cleanup).
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.crid.stop();
            crid_e2e::kill_leftover_pods(self.dir.path(), &self.crid.config.state_dir);
        }
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
    async fn start(opts: Opts) -> World {
        let reg = Registry::start(Default::default()).unwrap();
        let img = ImageBuilder::busybox()
            .unwrap()
            .with_config(|c| {
                c.env.push("FROM_IMAGE=image".into());
                c.env.push("KEEP=image".into());
                c.working_dir = Some("/srv".into());
            })
            .build()
            .unwrap();
        img.push(&reg.target(), "test/run", &["v1"]).unwrap();
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
        ep.push(&reg.target(), "test/ep", &["v1"]).unwrap();

        let dir = test_dir();
        let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
            .await
            .unwrap();
        let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
        let net = opts.net.map(|n| TestNet::new(n, &mut config, None));
        for (name, h) in opts.runtimes {
            config.runtimes.insert(name.to_string(), h);
        }
        let crid = CridProcess::start(config).await.unwrap();
        let mut c = crid.clients().await.unwrap();
        let image = format!("{}/test/run:v1", reg.host());
        let ep_image = format!("{}/test/ep:v1", reg.host());
        for i in [&image, &ep_image] {
            c.image
                .pull_image(cri::PullImageRequest {
                    image: Some(image_spec(i)),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        World {
            c,
            crid,
            _net: net,
            ctrd,
            _reg: reg,
            image,
            ep_image,
            dir,
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        crid_e2e::ctr(&self.ctrd.socket(), args)
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

    fn pod_config(&self, name: &str, own_net: bool) -> cri::PodSandboxConfig {
        let network = if own_net {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Node
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self
                .dir
                .path()
                .join("logs")
                .join(name)
                .display()
                .to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs a pod with `handler`; host network unless `own_net`.
    async fn run_pod(
        &mut self,
        name: &str,
        own_net: bool,
        handler: &str,
    ) -> Result<(String, cri::PodSandboxConfig), tonic::Status> {
        let cfg = self.pod_config(name, own_net);
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

    async fn create(
        &mut self,
        pod: &(String, cri::PodSandboxConfig),
        cfg: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn start_ctr(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.c
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// Waits (up to 30 s) until container `id` has exited; its status.
    async fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        let c = self.c.clone();
        let got = wait_for(Duration::from_secs(30), || {
            let mut c = c.clone();
            let id = id.to_string();
            async move {
                let s = c
                    .runtime
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
            }
        })
        .await;
        got.unwrap_or_else(|| panic!("container {id} did not exit: {}", self.crid.log()))
    }

    async fn status(&mut self, id: &str) -> Result<cri::ContainerStatusResponse, tonic::Status> {
        self.c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .map(|r| r.into_inner())
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

    async fn stop_remove_pod(&mut self, id: &str) {
        self.c
            .runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap();
        self.c
            .runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap();
    }

    /// Nothing of `pods` is left: containerd containers, tasks and active
    /// snapshots, crid records, mounts under the test dir, cgroups, helper
    /// and shim processes.
    async fn assert_nothing_left(&self, pods: &[&str]) {
        assert_eq!(self.ctr(&["containers", "ls", "-q"]).trim(), "");
        assert_eq!(self.ctr(&["tasks", "ls", "-q"]).trim(), "");
        let active: Vec<String> = self
            .ctr(&["snapshots", "ls"])
            .lines()
            .filter(|l| l.trim_end().ends_with("Active"))
            .map(str::to_string)
            .collect();
        assert!(active.is_empty(), "{active:?}");
        let records = self.crid.config.state_dir.join("containers");
        let left: Vec<_> = std::fs::read_dir(&records)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
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
    assert_eq!(names, vec!["", "fast", "runc"]);

    // An unknown handler is refused, naming the known ones; nothing is made.
    let err = w.run_pod("h-bad", false, "kata").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("no runtime for \"kata\""), "{err:?}");
    assert!(err.message().contains("\"fast\""), "{err:?}");

    // A pod with the handler: its containers get that binary and root.
    let pod = w.run_pod("h-fast", false, "fast").await.unwrap();
    let out = w.out_dir("fast");
    let id = w
        .create(
            &pod,
            sh(
                "a",
                &w.image.clone(),
                "echo ran > /out/ran; sleep 60",
                Some(&out),
            ),
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
    w.start_ctr(&id).await.unwrap();
    assert_eq!(wait_file(&out.join("ran")).await, "ran\n");
    assert!(root.join("crid").join(&id).join("state.json").is_file());
    // The default pod keeps plain runc.
    let plain = w.run_pod("h-default", false, "").await.unwrap();
    let id2 = w
        .create(&plain, sh("b", &w.image.clone(), "true", None))
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
    let pod = w.run_pod("upd-created", false, "").await.unwrap();
    let mut cfg = sh("a", &w.image.clone(), "sleep 60", None);
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(&pod, cfg).await.unwrap();
    let res = |st: &cri::ContainerStatusResponse| {
        st.status
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.linux.clone())
            .unwrap()
    };
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
    let pod = w.run_pod("tgt-err", false, "").await.unwrap();
    let other = w.run_pod("tgt-other", false, "").await.unwrap();
    let image = w.image.clone();
    let created = w
        .create(&pod, sh("t", &image, "sleep 60", None))
        .await
        .unwrap();
    let elsewhere = w
        .create(&other, sh("t", &image, "sleep 60", None))
        .await
        .unwrap();

    let err = w
        .create(&pod, targeting("d1", &image, "nosuchcontainer", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = w
        .create(&pod, targeting("d2", &image, &created, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{err:?}");
    let err = w
        .create(&pod, targeting("d3", &image, &elsewhere, None))
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
    let pod = w.run_pod("table", false, "").await.unwrap();
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
        let id = w.create(&pod, cfg).await.unwrap();
        w.start_ctr(&id).await.unwrap();
        assert_eq!(w.wait_exited(&id).await.exit_code, 0, "case {i}");
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
    let mut cfg = sh("env", &w.image.clone(), script, Some(&out));
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
    let id = w.create(&pod, cfg).await.unwrap();
    w.start_ctr(&id).await.unwrap();
    w.wait_exited(&id).await;
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
    let mut cfg = sh("wd", &w.image.clone(), "pwd > /out/pwd", Some(&out));
    cfg.working_dir = "/tmp".into();
    let id = w.create(&pod, cfg).await.unwrap();
    w.start_ctr(&id).await.unwrap();
    w.wait_exited(&id).await;
    assert_eq!(wait_file(&out.join("pwd")).await, "/tmp\n");

    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_the_memory_limit_is_oom_killed() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod("oom", false, "").await.unwrap();
    // busybox dd allocates its block (64 MiB) and fills it from /dev/zero:
    // far over the 16 MiB limit, with no swap allowed (swap = limit).
    let mut cfg = sh(
        "hog",
        &w.image.clone(),
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
    let id = w.create(&pod, cfg).await.unwrap();
    w.start_ctr(&id).await.unwrap();
    let s = w.wait_exited(&id).await;
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
    let mut w = World::start(Opts {
        net: Some(201),
        ..Default::default()
    })
    .await;
    let pod = w.run_pod("pair", true, "").await.unwrap();
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
    assert!(pod_ip.starts_with("10.244.201."), "{pod_ip}");
    let image = w.image.clone();
    let (out_a, out_b) = (w.out_dir("a"), w.out_dir("b"));
    let show_ip = "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1";
    let a = w
        .create(
            &pod,
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
            &pod,
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
    w.start_ctr(&a).await.unwrap();
    w.start_ctr(&b).await.unwrap();
    assert_eq!(wait_file(&out_a.join("ip")).await.trim(), pod_ip);
    assert_eq!(wait_file(&out_b.join("ip")).await.trim(), pod_ip);
    assert_eq!(wait_file(&out_b.join("shm")).await, "token-a\n");

    // One shim for the pod: this containerd has exactly one
    // containerd-shim-runc-v2, and both tasks run.
    let (pa, pb) = (task_pid(&w, &a), task_pid(&w, &b));
    let sock = w.ctrd.socket().display().to_string();
    let shims: Vec<_> = processes_matching(&[&sock])
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd-shim-runc-v2"))
        .collect();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let sa = shims[0].0 as u32;

    // Removing the pod with both containers running leaves nothing.
    w.stop_remove_pod(&pod.0).await;
    w.assert_nothing_left(&[&pod.0]).await;
    for p in [pa, pb, sa] {
        assert!(gone(p as i32), "process {p} still alive");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn running_container_update_pid_target_and_forced_remove() {
    let mut w = World::start(Opts::default()).await;
    let pod = w.run_pod("live", false, "").await.unwrap();
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
    let target = w.create(&pod, cfg).await.unwrap();
    w.start_ctr(&target).await.unwrap();

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
    let st = w.status(&target).await.unwrap().status.unwrap();
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
        .create(&pod, targeting("debug", &image, &target, Some(&out)))
        .await
        .unwrap();
    w.start_ctr(&dbg).await.unwrap();
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
