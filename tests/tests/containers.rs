//! Containers end to end: an image pulled from a private registry into a
//! private containerd, a host-network pod (no CNI needed) run by crid, then
//! CreateContainer / ContainerStatus / ListContainers / RemoveContainer as
//! the kubelet sees them, and what `ctr` sees in containerd.

use crid_e2e::images::{Compression, Entry, ImageBuilder};
use crid_e2e::pods::Node;
use crid_e2e::{mounts_under, CridProcess};
use crid_proto::cri;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use tonic::Code;

/// One test's node (harness `Node`: registry, containerd, crid, clients)
/// with a busybox image whose user is the *name* `crid`, pulled.
struct World {
    n: Node,
    image_id: String,
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

impl World {
    async fn start() -> World {
        let image = || {
            ImageBuilder::busybox()
                .unwrap()
                .layer(vec![Entry::file("etc/hello", "hi\n")], Compression::None)
                .with_config(|c| {
                    c.user = Some("crid".into());
                    c.working_dir = Some("/tmp".into());
                    c.env.push("FROM_IMAGE=1".into());
                })
        };
        // Image digests are reproducible: the id is known before the pull.
        let image_id = image().build().unwrap().id().to_string();
        let mut n = Node::start_with_image(image(), |_| {}).await;
        let pulled =
            n.c.image
                .image_status(cri::ImageStatusRequest {
                    image: Some(spec(&n.image)),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
                .unwrap()
                .id;
        assert_eq!(pulled, image_id);
        World { n, image_id }
    }

    /// containerd container ids.
    fn ctrd_containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// (key, kind) of every snapshot.
    fn snapshots(&self) -> Vec<(String, String)> {
        self.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), f.last()?.to_string()))
            })
            .collect()
    }

    fn active_snapshots(&self) -> Vec<String> {
        self.snapshots()
            .into_iter()
            .filter(|(_, kind)| kind == "Active")
            .map(|(k, _)| k)
            .collect()
    }

    /// Container record files in crid's state dir.
    fn records(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.crid.config.state_dir.join("containers"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Runs a host-network pod (its own IPC and PID namespaces).
    async fn run_pod(&mut self, name: &str) -> (String, cri::PodSandboxConfig) {
        let cfg = self.n.pod_config(name);
        let id = self.n.run_pod(&cfg).await;
        (id, cfg)
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

    async fn list(&mut self, filter: cri::ContainerFilter) -> Vec<String> {
        let mut ids: Vec<String> = self
            .c
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    async fn remove(&mut self, id: &str) {
        self.c
            .runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap();
    }

    /// Nothing of any container is left in containerd, crid's state or mounts.
    fn assert_no_container_left(&self) {
        assert!(
            self.ctrd_containers().is_empty(),
            "{:?}",
            self.ctrd_containers()
        );
        assert!(
            self.active_snapshots().is_empty(),
            "{:?}",
            self.active_snapshots()
        );
        assert!(self.records().is_empty(), "{:?}", self.records());
        let run = self.crid.config.runtime_dir.join("containers");
        assert!(mounts_under(&run).is_empty(), "{:?}", mounts_under(&run));
    }
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn container(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(spec(image)),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        log_path: format!("{name}/0.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_status_list_remove() {
    let mut w = World::start().await;
    let image = w.image.clone();
    let (pod, pod_cfg) = w.run_pod("ctr-a").await;
    let (other_pod, other_cfg) = w.run_pod("ctr-b").await;

    let data = w.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let missing = w.dir.path().join("made-by-crid/sub");
    let mut cfg = container("web", &image);
    cfg.labels = HashMap::from([("tier".into(), "front".into())]);
    cfg.annotations = HashMap::from([("note".into(), "x".into())]);
    cfg.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: data.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/made".into(),
            host_path: missing.display().to_string(),
            ..Default::default()
        },
    ];
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let web = w.create(&pod, &pod_cfg, cfg).await.unwrap();
    assert!(
        missing.is_dir(),
        "a missing mount source is created as a directory"
    );

    // What the kubelet sees.
    let st = w.status(&web).await.unwrap();
    let s = st.status.unwrap();
    assert_eq!(s.id, web);
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(s.metadata.unwrap().name, "web");
    assert!(s.created_at >= before, "{} < {before}", s.created_at);
    assert_eq!((s.started_at, s.finished_at, s.exit_code), (0, 0, 0));
    assert_eq!(s.image.unwrap().image, image);
    assert!(
        s.image_ref == w.image_id || s.image_ref.contains("@sha256:"),
        "{}",
        s.image_ref
    );
    assert_eq!(s.labels["tier"], "front");
    assert_eq!(s.annotations["note"], "x");
    assert_eq!(s.mounts.len(), 2);
    assert_eq!(s.mounts[0].container_path, "/data");
    assert!(s.mounts[0].readonly);
    assert_eq!(
        s.log_path,
        w.log_dir("ctr-a").join("web/0.log").display().to_string()
    );
    // Verbose info carries the OCI spec: the image's *named* user resolved
    // from the image's /etc/passwd and /etc/group, the image's cwd and env.
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let spec = &info["runtimeSpec"];
    assert_eq!(spec["process"]["user"]["uid"], 1000);
    assert_eq!(spec["process"]["user"]["gid"], 1000);
    assert_eq!(
        spec["process"]["user"]["additionalGids"],
        serde_json::json!([1000, 2000])
    );
    assert_eq!(spec["process"]["cwd"], "/tmp");
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["sh", "-c", "echo hi"])
    );
    let env: Vec<&str> = spec["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"FROM_IMAGE=1"), "{env:?}");
    assert_eq!(
        spec["annotations"]["io.kubernetes.cri.sandbox-id"], pod,
        "the shim groups the pod's containers by this annotation"
    );
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        format!("/crid/{pod}/{web}").as_str()
    );
    assert_eq!(info["snapshotKey"], web.as_str());

    // What containerd holds: the container, referencing its active snapshot,
    // with the default handler's runtime: the pod helper's shim command
    // (crid's `containerd-shim-crid-v1` link to crid-pod-helper, by absolute
    // path), or containerd's runc v2 shim under
    // CRID_TEST_RUNC_RUNTIME_TYPE=io.containerd.runc.v2.
    assert_eq!(w.ctrd_containers(), vec![web.clone()]);
    assert_eq!(w.active_snapshots(), vec![web.clone()]);
    let ci: serde_json::Value =
        serde_json::from_str(&w.ctr(&["containers", "info", &web])).unwrap();
    if crid_e2e::helper_is_shim(&w.crid.config, "") {
        let link = w.crid.config.runtime_dir.join("containerd-shim-crid-v1");
        assert_eq!(ci["Runtime"]["Name"], link.display().to_string().as_str());
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(crid_e2e::workspace_bin("crid-pod-helper")).unwrap()
        );
        assert_eq!(
            spec["annotations"]["io.crid.shim.address"]
                .as_str()
                .map(|a| a.starts_with("unix:///") && a.ends_with(".sock")),
            Some(true),
            "{spec}"
        );
    } else {
        assert_eq!(ci["Runtime"]["Name"], "io.containerd.runc.v2");
    }
    assert_eq!(ci["SnapshotKey"], web.as_str());
    assert_eq!(ci["Snapshotter"], "overlayfs");
    // The image view used to read /etc/passwd is unmounted again.
    let run = w.crid.config.runtime_dir.join("containers");
    assert!(mounts_under(&run).is_empty(), "{:?}", mounts_under(&run));

    // A second container in the same pod and one in another pod.
    let mut side_cfg = container("side", &image);
    side_cfg.labels = HashMap::from([("tier".into(), "back".into())]);
    let side = w.create(&pod, &pod_cfg, side_cfg).await.unwrap();
    let other = w
        .create(&other_pod, &other_cfg, container("web", &image))
        .await
        .unwrap();

    // Filters.
    let mut all = vec![web.clone(), side.clone(), other.clone()];
    all.sort();
    assert_eq!(w.list(Default::default()).await, all);
    let by_pod = w
        .list(cri::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await;
    let mut want = vec![web.clone(), side.clone()];
    want.sort();
    assert_eq!(by_pod, want);
    assert_eq!(
        w.list(cri::ContainerFilter {
            id: web[..12].to_string(),
            ..Default::default()
        })
        .await,
        vec![web.clone()]
    );
    assert_eq!(
        w.list(cri::ContainerFilter {
            label_selector: HashMap::from([("tier".into(), "back".into())]),
            ..Default::default()
        })
        .await,
        vec![side.clone()]
    );
    assert_eq!(
        w.list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32
            }),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        w.list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerCreated as i32
            }),
            ..Default::default()
        })
        .await,
        all
    );

    // Remove: no containerd container, no snapshot, no record; twice is fine.
    w.remove(&web).await;
    w.remove(&web).await;
    assert_eq!(w.status(&web).await.unwrap_err().code(), Code::NotFound);
    assert!(!w.ctrd_containers().contains(&web));
    assert!(!w.snapshots().iter().any(|(k, _)| k == &web));
    assert_eq!(w.records().len(), 2);
    // The name is free again.
    let web2 = w
        .create(&pod, &pod_cfg, container("web", &image))
        .await
        .unwrap();
    assert_ne!(web2, web);

    // A record survives a crid restart.
    let config = w.crid.config.clone();
    w.crid.stop();
    w.crid = CridProcess::start(config).await.unwrap();
    w.c = w.crid.clients().await.unwrap();
    let s = w.status(&side).await.unwrap().status.unwrap();
    assert_eq!(s.labels["tier"], "back");
    assert_eq!(
        w.create(&pod, &pod_cfg, container("side", &image))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists,
        "the reservation is reloaded"
    );

    // RemovePodSandbox removes the pod's containers.
    w.stop_remove_pod(&pod).await;
    assert_eq!(w.list(Default::default()).await, vec![other.clone()]);
    assert_eq!(w.ctrd_containers(), vec![other.clone()]);
    w.stop_remove_pod(&other_pod).await;
    w.assert_no_container_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_leaves_nothing() {
    let mut w = World::start().await;
    let (pod, pod_cfg) = w.run_pod("ctr-bad").await;
    let image = w.image.clone();

    let code = |r: Result<String, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            w.create("nosuchpod", &pod_cfg, container("a", &image))
                .await
        ),
        Code::NotFound
    );
    let unknown = format!("{}-missing:v9", image.trim_end_matches(":v1"));
    assert_eq!(
        code(w.create(&pod, &pod_cfg, container("a", &unknown)).await),
        Code::NotFound
    );
    let mut bad_log = container("a", &image);
    bad_log.log_path = "../escape.log".into();
    assert_eq!(
        code(w.create(&pod, &pod_cfg, bad_log).await),
        Code::InvalidArgument
    );
    let mut bad_mount = container("a", &image);
    bad_mount.mounts = vec![cri::Mount {
        container_path: "relative".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    assert_eq!(
        code(w.create(&pod, &pod_cfg, bad_mount).await),
        Code::InvalidArgument
    );
    // Fails late, in spec generation, after the snapshot was prepared: an
    // unknown user name in the image's /etc/passwd.
    let mut bad_user = container("a", &image);
    bad_user.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "nosuchuser".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = w.create(&pod, &pod_cfg, bad_user).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    w.assert_no_container_left();

    // The failed creates left the name free; a duplicate is refused.
    let a = w
        .create(&pod, &pod_cfg, container("a", &image))
        .await
        .unwrap();
    assert_eq!(
        code(w.create(&pod, &pod_cfg, container("a", &image)).await),
        Code::AlreadyExists
    );
    let mut next = container("a", &image);
    next.metadata.as_mut().unwrap().attempt = 1;
    let a1 = w.create(&pod, &pod_cfg, next).await.unwrap();

    // A stopped pod takes no new containers.
    w.c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        code(w.create(&pod, &pod_cfg, container("b", &image)).await),
        Code::FailedPrecondition
    );
    w.remove(&a).await;
    w.remove(&a1).await;
    w.remove("never-existed").await;
    w.stop_remove_pod(&pod).await;
    w.assert_no_container_left();
}
