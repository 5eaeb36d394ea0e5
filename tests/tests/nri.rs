//! NRI (issue 16): crid's NRI socket and pre-installed plugins, with a
//! small plugin of our own (src/bin/nri_test_plugin.rs) speaking NRI's wire
//! protocol: a plugin's CreateContainer adjustment (an env var and a
//! read-only mount) is seen inside the container; the plugin sees every
//! pod and container event in order; a plugin that hangs or crashes never
//! holds pod or container creation longer than the request timeout.
//! critest's NRI specs (tests/critest/run.sh) cover the CRI contracts
//! around the events (not listed during a hook, errors fail and undo).

use crid_e2e::images::ImageBuilder;
use crid_e2e::pods::{sh, Node};
use crid_e2e::{wait_for, workspace_bin};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The NRI directories of a node (below its test dir).
struct NriDirs {
    socket: PathBuf,
    events: PathBuf,
    data: PathBuf,
}

/// Starts a node with NRI on: `request_timeout_ms`, and `preinstalled`
/// (name, config) plugins that run the test plugin (`{data}` in a config
/// is the node's NRI data dir, which holds `file`).
async fn node(request_timeout_ms: u64, preinstalled: &[(&str, &str)]) -> (Node, NriDirs) {
    let mut dirs = None;
    let node = Node::start_with_image(ImageBuilder::busybox().unwrap(), |c| {
        let base = c.socket.parent().unwrap().to_path_buf();
        let d = NriDirs {
            socket: base.join("nri/nri.sock"),
            events: base.join("nri-events"),
            data: base.join("nri-data"),
        };
        std::fs::create_dir_all(&d.data).unwrap();
        std::fs::write(d.data.join("file"), "data-from-nri-mount\n").unwrap();
        let (plugins, conf) = (base.join("nri-plugins"), base.join("nri-conf"));
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        for (name, config) in preinstalled {
            // crid passes the socket as fd 3 and NRI_PLUGIN_*; exec keeps both.
            let script = format!(
                "#!/bin/sh\nexec {} --events {}\n",
                workspace_bin("nri_test_plugin").display(),
                d.events.display()
            );
            let path = plugins.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let config = config.replace("{data}", &d.data.display().to_string());
            std::fs::write(conf.join(format!("{name}.conf")), config).unwrap();
        }
        c.nri.enable = true;
        c.nri.socket_path = d.socket.clone();
        c.nri.plugin_path = plugins;
        c.nri.plugin_config_path = conf;
        c.nri.plugin_request_timeout_ms = request_timeout_ms;
        dirs = Some(d);
    })
    .await;
    (node, dirs.unwrap())
}

fn events(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the events file has a line starting with `prefix`.
async fn wait_event(path: &Path, prefix: &str) {
    let found = wait_for(Duration::from_secs(10), || async {
        events(path)
            .iter()
            .any(|l| l.starts_with(prefix))
            .then_some(())
    })
    .await;
    assert!(found.is_some(), "no {prefix:?} event in {:?}", events(path));
}

/// Starts the test plugin as an external plugin on `socket`.
fn external_plugin(d: &NriDirs, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(workspace_bin("nri_test_plugin"))
        .args(["--socket", &d.socket.display().to_string()])
        .args(["--events", &d.events.display().to_string()])
        .args(["--name", "ext", "--idx", "20"])
        .args(extra)
        .spawn()
        .unwrap()
}

/// Waits up to `timeout` for `child` to exit; its status.
async fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    wait_for(timeout, || {
        let r = child.try_wait().ok().flatten();
        async move { r }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preinstalled_plugin_injects_env_and_mount_and_sees_every_event() {
    let (mut node, d) = node(
        2000,
        &[(
            "10-inject",
            "env=NRI_INJECTED=set-by-plugin\nmount={data}:/nri-data\n",
        )],
    )
    .await;
    // crid registers pre-installed plugins before it serves the CRI.
    let ev = events(&d.events);
    assert_eq!(
        ev.first().map(String::as_str),
        Some("Configure crid"),
        "{ev:?}"
    );
    assert_eq!(
        ev.get(1).map(String::as_str),
        Some("Synchronize 0 0"),
        "{ev:?}"
    );

    let pod_cfg = node.pod_config("nri-inject");
    let pod = node.run_pod(&pod_cfg).await;
    let image = node.image.clone();
    let ctr = node
        .run(
            &pod,
            &pod_cfg,
            sh(
                "c",
                &image,
                "echo env=$NRI_INJECTED; cat /nri-data/file; touch /nri-data/x 2>/dev/null || echo mount-is-ro; sleep 3600",
            ),
        )
        .await;
    node.wait_logged("nri-inject", "c", "mount-is-ro", Duration::from_secs(20))
        .await;
    let log = std::fs::read_to_string(node.log_dir("nri-inject").join("c.log")).unwrap();
    assert!(log.contains("env=set-by-plugin"), "{log}");
    assert!(log.contains("data-from-nri-mount"), "{log}");
    assert!(!d.data.join("x").exists());

    node.stop_container(&ctr, 0).await.unwrap();
    node.remove_container(&ctr).await.unwrap();
    node.stop_remove_pod(&pod).await;
    // Every event, in order, for the pod and the container.
    let want = [
        format!("RunPodSandbox {pod}"),
        format!("CreateContainer {ctr}"),
        format!("PostCreateContainer {ctr}"),
        format!("StartContainer {ctr}"),
        format!("PostStartContainer {ctr}"),
        format!("StopContainer {ctr}"),
        format!("RemoveContainer {ctr}"),
        format!("StopPodSandbox {pod}"),
        format!("RemovePodSandbox {pod}"),
    ];
    let got: Vec<String> = events(&d.events).into_iter().skip(2).collect();
    assert_eq!(got, want);
    node.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_plugin_holds_pod_creation_no_longer_than_the_timeout() {
    let (mut node, d) = node(1500, &[]).await;
    let mut plugin = external_plugin(&d, &["--hang", "RunPodSandbox"]);
    wait_event(&d.events, "Synchronize").await;

    let pod_cfg = node.pod_config("nri-hang");
    let started = Instant::now();
    let pod = node.run_pod(&pod_cfg).await;
    let took = started.elapsed();
    eprintln!("RunPodSandbox with a plugin hanging in it (timeout 1.5 s) took {took:?}");
    // crid waited for the plugin (it got the event), then gave up on it.
    assert!(events(&d.events)
        .iter()
        .any(|l| l == "hanging in RunPodSandbox"));
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(
        took < Duration::from_millis(1500) + Duration::from_secs(5),
        "{took:?}"
    );
    let st = node.pod_status(&pod).await.unwrap();
    assert_eq!(
        st.state,
        crid_proto::cri::PodSandboxState::SandboxReady as i32
    );
    // Disconnected: the plugin sees its connection end and exits.
    assert!(wait_exit(&mut plugin, Duration::from_secs(10))
        .await
        .is_some());
    // Later work does not wait for it any more.
    let image = node.image.clone();
    let started = Instant::now();
    let ctr = node
        .run(&pod, &pod_cfg, sh("c", &image, "sleep 3600"))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(!events(&d.events).iter().any(|l| l.contains(&ctr)));
    node.stop_remove_pod(&pod).await;
    node.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_plugin_does_not_fail_or_hold_container_creation() {
    // A long timeout: the crash must be noticed at once, not timed out.
    let (mut node, d) = node(20_000, &[]).await;
    let mut plugin = external_plugin(&d, &["--crash", "CreateContainer"]);
    wait_event(&d.events, "Synchronize").await;
    let pod_cfg = node.pod_config("nri-crash");
    let pod = node.run_pod(&pod_cfg).await;
    let image = node.image.clone();
    let started = Instant::now();
    let ctr = node
        .run(
            &pod,
            &pod_cfg,
            sh("c", &image, "echo env=[$NRI_INJECTED]; sleep 3600"),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(events(&d.events)
        .iter()
        .any(|l| l == "crash CreateContainer"));
    let status = wait_exit(&mut plugin, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3));
    node.wait_logged("nri-crash", "c", "env=[]", Duration::from_secs(20))
        .await;
    node.stop_container(&ctr, 0).await.unwrap();
    node.stop_remove_pod(&pod).await;
    node.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_updates_and_evicts_a_container() {
    // 64 MiB: above what busybox needs, and distinct from any default.
    let (mut node, d) = node(2000, &[("10-evict", "evict-after-start=67108864\n")]).await;
    let pod_cfg = node.pod_config("nri-evict");
    let pod = node.run_pod(&pod_cfg).await;
    let image = node.image.clone();
    let ctr = node
        .run(&pod, &pod_cfg, sh("c", &image, "sleep 3600"))
        .await;
    // The plugin asked at PostStart; the eviction kills the container.
    let st = node.wait_exited(&ctr, Duration::from_secs(20)).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    let limit = st
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(limit, Some(67_108_864));
    // Its answer: no failed update; then the eviction's StopContainer.
    wait_event(&d.events, "answer 3 code=0 failed=0").await;
    wait_event(&d.events, &format!("StopContainer {ctr}")).await;
    node.stop_remove_pod(&pod).await;
    node.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_plugin_sees_an_earlier_plugins_adjustment() {
    let (mut node, d) = node(
        2000,
        &[
            ("10-first", "env=NRI_FIRST=1\n"),
            ("20-second", "env=NRI_SECOND=2\n"),
        ],
    )
    .await;
    let pod_cfg = node.pod_config("nri-two");
    let pod = node.run_pod(&pod_cfg).await;
    let image = node.image.clone();
    node.run(
        &pod,
        &pod_cfg,
        sh(
            "c",
            &image,
            "echo first=$NRI_FIRST second=$NRI_SECOND; sleep 3600",
        ),
    )
    .await;
    node.wait_logged("nri-two", "c", "first=1 second=2", Duration::from_secs(20))
        .await;
    let ev = events(&d.events);
    // Plugins run in index order; the second got the first one's env.
    assert!(ev.iter().any(|l| l == "second saw NRI_FIRST=1"), "{ev:?}");
    assert!(!ev.iter().any(|l| l.starts_with("first saw")), "{ev:?}");
    node.stop_remove_pod(&pod).await;
    node.assert_no_container_left().await;
}
