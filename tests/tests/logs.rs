//! Container logs end to end (issue 6): containers run by containerd write
//! to the pod helper's FIFOs and the kubelet reads the CRI log files. Every
//! assertion is on the log file as the kubelet would parse it.

use crid_common::config::RUNC_V2_RUNTIME_HANDLER;
use crid_e2e::pods::{join_lines, parse_cri_log, sh, Node};
use crid_proto::cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Whole lines of one stream in a log file.
fn stdout_lines(text: &str) -> Vec<String> {
    join_lines(&parse_cri_log(text))
        .into_iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l)
        .collect()
}

/// Waits until `path` holds at least `n` lines.
async fn wait_lines(path: &Path, n: usize) {
    let p = path.to_path_buf();
    crid_e2e::wait_for(Duration::from_secs(30), || {
        let p = p.clone();
        async move { (read(&p).lines().count() >= n).then_some(()) }
    })
    .await
    .unwrap_or_else(|| panic!("{} never had {n} lines", path.display()));
}

/// Runs `script` in a fresh container of `pod` and waits for it to exit;
/// returns the log file's path once it stopped growing.
async fn run_to_end(
    n: &mut Node,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: cri::ContainerConfig,
) -> PathBuf {
    let path = n
        .log_dir(pod_cfg.metadata.as_ref().unwrap().name.as_str())
        .join(&cfg.log_path);
    let id = n.run(pod, pod_cfg, cfg).await;
    let s = n.wait_exited(&id, Duration::from_secs(120)).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    // The helper writes what it read within 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_long_lines_streams_and_edges() {
    let mut n = Node::start(vec![]).await;
    let image = n.image.clone();
    let pod_cfg = n.pod_config("logs-basic");
    let pod = n.run_pod(&pod_cfg).await;

    // 200,000 numbered lines: each once, in order, well-formed.
    let p = run_to_end(
        &mut n,
        &pod,
        &pod_cfg,
        cri::ContainerConfig {
            command: vec!["/bin/seq".into(), "1".into(), "200000".into()],
            ..sh("seq", &image, "")
        },
    )
    .await;
    let text = read(&p);
    let lines = stdout_lines(&text);
    assert_eq!(lines.len(), 200_000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &(i + 1).to_string(), "line {i}");
    }

    // A 100 KiB line: P pieces of at most 16 KiB, then F; joined = original.
    let p = run_to_end(
        &mut n,
        &pod,
        &pod_cfg,
        sh(
            "long",
            &image,
            "head -c 102400 /dev/zero | tr '\\0' x; echo; echo after",
        ),
    )
    .await;
    let entries = parse_cri_log(&read(&p));
    let tags: String = entries.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(tags, "PPPPPPFF", "{tags}");
    assert!(entries.iter().all(|e| e.2.len() <= 16 * 1024));
    let joined = join_lines(&entries);
    assert_eq!(joined[0].1, "x".repeat(102_400));
    assert_eq!(joined[1].1, "after");

    // stdout and stderr interleaved: each tagged with its stream, in order.
    let p = run_to_end(
        &mut n,
        &pod,
        &pod_cfg,
        sh(
            "mixed",
            &image,
            "i=0; while [ $i -lt 500 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
        ),
    )
    .await;
    let entries = join_lines(&parse_cri_log(&read(&p)));
    for stream in ["stdout", "stderr"] {
        let got: Vec<&str> = entries
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, l)| l.as_str())
            .collect();
        let prefix = if stream == "stdout" { "out" } else { "err" };
        let want: Vec<String> = (0..500).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(got, want, "{stream}");
    }

    // An empty line, and a last line without a newline (a P entry at the end).
    let p = run_to_end(
        &mut n,
        &pod,
        &pod_cfg,
        sh("edges", &image, "printf 'a\\n\\nb'"),
    )
    .await;
    let entries = parse_cri_log(&read(&p));
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(got, [("F", "a"), ("F", ""), ("P", "b")]);
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o640
    );

    // A TTY container: one stream, logged as stdout, the pty's \r\n ends lines.
    let p = run_to_end(
        &mut n,
        &pod,
        &pod_cfg,
        cri::ContainerConfig {
            tty: true,
            ..sh("tty", &image, "echo hello; echo world")
        },
    )
    .await;
    let entries = parse_cri_log(&read(&p));
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        got,
        [("stdout", "F", "hello"), ("stdout", "F", "world")],
        "{entries:?}"
    );

    n.stop_remove_pod(&pod).await;
}

/// A container printing `count` numbered lines, `batch` per 10 ms pause, so
/// that the test can act while it runs.
fn paced(name: &str, image: &str, count: u32, batch: u32) -> cri::ContainerConfig {
    sh(
        name,
        image,
        &format!(
            "i=0; while [ $i -lt {count} ]; do echo line$i; i=$((i+1)); \
             if [ $((i % {batch})) -eq 0 ]; then usleep 10000; fi; done"
        ),
    )
}

/// Numbers of `lineN` lines in a log file, in file order.
fn numbers(text: &str) -> Vec<u32> {
    stdout_lines(text)
        .iter()
        .map(|l| {
            l.strip_prefix("line")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_mid_stream_keeps_every_line_once() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("logs-rotate");
    let pod = n.run_pod(&pod_cfg).await;
    let count = 20_000;
    let cfg = paced("rot", &n.image, count, 50);
    let path = n.log_dir("logs-rotate").join("rot.log");
    let id = n.run(&pod, &pod_cfg, cfg).await;
    wait_lines(&path, 2000).await;

    // The kubelet's rotation: rename, then ReopenContainerLog.
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    n.c.runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    // Answered once the new file exists.
    assert!(path.exists());
    let s = n.wait_exited(&id, Duration::from_secs(120)).await;
    assert_eq!(s.exit_code, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let old = numbers(&read(&rotated));
    let new = numbers(&read(&path));
    assert!(
        !old.is_empty() && !new.is_empty(),
        "{} {}",
        old.len(),
        new.len()
    );
    let all: Vec<u32> = old.into_iter().chain(new).collect();
    assert_eq!(all, (0..count).collect::<Vec<u32>>());

    // Reopening the log of an exited container is refused.
    let e =
        n.c.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helper_sigkill_mid_stream_loses_no_line() {
    // containerd's runc shim outlives the helper: the container goes on.
    helper_sigkill_mid_stream(RUNC_V2_RUNTIME_HANDLER).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helper_sigkill_mid_stream_with_the_default_handler() {
    // The pod helper as shim (unless CRID_TEST_RUNC_RUNTIME_TYPE says
    // otherwise): the container dies with it.
    helper_sigkill_mid_stream("").await;
}

/// SIGKILLs the helper of a pod (runtime handler `handler`) while its
/// container logs 20,000 paced lines. With containerd's runc shim the
/// container survives and no line is lost. With the helper as shim
/// containerd cleans the task up: the container is reported exited 137,
/// its process is gone and nothing of it is left, what was logged is every
/// line up to some point, in order; the replaced helper runs new
/// containers and writes their logs.
async fn helper_sigkill_mid_stream(handler: &str) {
    let mut n = Node::start(vec![]).await;
    let helper_shim = crid_e2e::helper_is_shim(&n.crid.config, handler);
    let pod_cfg = n.pod_config("logs-kill");
    let pod = n.run_pod_with(&pod_cfg, handler).await;
    let count = 20_000;
    let path = n.log_dir("logs-kill").join("k.log");
    let id = n.run(&pod, &pod_cfg, paced("k", &n.image, count, 50)).await;
    wait_lines(&path, 2000).await;

    let helper = n.helper_pid(&pod).await;
    let cpid = n.container_info(&id).await["pid"].as_u64().expect("pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    if helper_shim {
        // containerd sees the shim connection close and runs
        // `containerd-shim-crid-v1 delete`: the container is killed.
        let s = n.wait_exited(&id, Duration::from_secs(60)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
        let new = n.wait_helper_replaced(&pod, helper).await;
        // Nothing orphaned: the container's process and the old helper are
        // gone (not even a zombie: the node's init reaped them), containerd
        // has no task for it, the pod's cgroups hold only the new helper,
        // its children and the pod's PID-namespace init (which the new
        // helper re-adopted: the old one's child, now the node init's).
        for p in [cpid, helper] {
            let gone = crid_e2e::wait_for(Duration::from_secs(10), || async move {
                crid_e2e::parent_pid(p).is_none().then_some(())
            })
            .await;
            assert!(gone.is_some(), "process {p} still there");
        }
        let tasks = n.ctr(&["tasks", "ls", "-q"]);
        assert!(!tasks.lines().any(|l| l.trim() == id), "{tasks}");
        let reaper = n.pod_info(&pod).await["reaperPid"]
            .as_u64()
            .map(|p| p as u32);
        let in_pod = crid_e2e::pids_in_cgroup(&format!("crid/{pod}"));
        assert!(in_pod.contains(&(new as i32)), "{in_pod:?}");
        for p in in_pod {
            let p = p as u32;
            assert!(
                p == new || Some(p) == reaper || crid_e2e::parent_pid(p) == Some(new),
                "process {p} (parent {:?}) left in the pod's cgroup",
                crid_e2e::parent_pid(p)
            );
        }
        // What was logged is every line from the first to some point, in
        // order (at most one batch written again, as below), no hole.
        let got = numbers(&read(&path));
        let rewinds = (1..got.len()).filter(|&i| got[i] <= got[i - 1]).count();
        assert!(rewinds <= 1, "{rewinds} steps back");
        let mut once = got.clone();
        once.dedup_by(|b, a| b <= a);
        assert!(once.len() >= 2000, "{} lines", once.len());
        assert_eq!(once, (0..once.len() as u32).collect::<Vec<_>>(), "a hole");
        eprintln!(
            "helper SIGKILL (helper shim): container exited 137 after line{}",
            once.len() - 1
        );
        // The new helper serves the pod: a new container runs and its
        // lines are logged, every one.
        let again = n
            .run(&pod, &pod_cfg, paced("again", &n.image, 500, 50))
            .await;
        let s = n.wait_exited(&again, Duration::from_secs(60)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
        let again_log = n.log_dir("logs-kill").join("again.log");
        let got = crid_e2e::wait_for(Duration::from_secs(10), || {
            let p = again_log.clone();
            async move {
                let nums = numbers(&read(&p));
                (nums.len() == 500).then_some(nums)
            }
        })
        .await
        .expect("500 lines logged by the new helper");
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        n.stop_remove_pod(&pod).await;
        n.assert_no_container_left().await;
        return;
    }

    // The container is not blocked or killed by its log reader's death.
    let s = n.wait_exited(&id, Duration::from_secs(120)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    // crid restarts the helper, which drains on where the old one stopped.
    let got = crid_e2e::wait_for(Duration::from_secs(20), || {
        let p = path.clone();
        async move {
            let nums = numbers(&read(&p));
            (nums.last() == Some(&(count - 1))).then_some(nums)
        }
    })
    .await
    .expect("the last line is logged after the helper's restart");
    // Nothing lost: every line is there, in order. The helper consumes a
    // FIFO's bytes only after writing their entries, so the one thing a
    // kill can cause is the batch written just before it being written
    // again by the next helper: at most one step back, of at most one
    // window (64 KiB) of lines, and only lines already logged.
    let rewinds: Vec<usize> = (1..got.len()).filter(|&i| got[i] <= got[i - 1]).collect();
    assert!(rewinds.len() <= 1, "more than one step back: {rewinds:?}");
    let mut once = got.clone();
    once.dedup_by(|b, a| b <= a);
    let missing = count as usize - once.len();
    assert_eq!(once, (0..count).collect::<Vec<_>>(), "{missing} lines lost");
    let rewritten = got.len() - once.len();
    assert!(
        rewritten * "lineNNNNN\n".len() <= 64 * 1024,
        "{rewritten} lines written twice"
    );
    eprintln!("helper SIGKILL: 0 of {count} lines lost, {rewritten} written twice");
    n.stop_remove_pod(&pod).await;
    n.assert_no_container_left().await;
}
