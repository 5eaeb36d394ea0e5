//! Streaming end to end (issue 7): CRI Exec / Attach / PortForward URLs on
//! crid's streaming listener, served by the pod's helper, driven with our
//! own SPDY/3.1 and WebSocket client (crid_e2e::stream_client).
//!
//! Pods here have their own network namespace with only the `loopback` CNI
//! plugin: no bridge, no addresses to collide between parallel tests.

use crid_e2e::stream_client::{raw_request, SpdyClient, WsClient};
use crid_e2e::{test_dir, CridProcess, PrivateContainerd};
use crid_proto::cri;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::Code;

/// One test's world; a failed test still removes its pods.
struct World {
    c: crid_e2e::CriClients,
    crid: CridProcess,
    _ctrd: PrivateContainerd,
    dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.crid.stop();
            crid_e2e::kill_leftover_pods(self.dir.path(), &self.crid.config.state_dir);
        }
    }
}

impl World {
    async fn start(token_ttl_secs: u64) -> World {
        World::start_with(|c| c.streaming.token_ttl_secs = token_ttl_secs).await
    }

    /// A world whose crid config `f` adjusts (`f` gets the test dir too).
    async fn start_with(f: impl FnOnce(&mut crid_common::config::Config)) -> World {
        let dir = test_dir();
        let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
            .await
            .unwrap();
        let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
        f(&mut config);
        std::fs::create_dir_all(&config.cni.conf_dir).unwrap();
        std::fs::write(
            config.cni.conf_dir.join("10-lo.conflist"),
            r#"{"cniVersion":"1.0.0","name":"crid-stream-lo","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        config.cni.bin_dirs = vec![PathBuf::from("/usr/lib/cni")];
        let crid = CridProcess::start(config).await.unwrap();
        let c = crid.clients().await.unwrap();
        World {
            c,
            crid,
            _ctrd: ctrd,
            dir,
        }
    }

    /// A pod with its own network namespace; returns its id.
    async fn run_pod(&mut self, name: &str) -> String {
        let cfg = cri::PodSandboxConfig {
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
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        self.c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    async fn remove_pod(&mut self, id: &str) {
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

    fn netns_pin(&self, pod: &str) -> PathBuf {
        self.crid
            .config
            .runtime_dir
            .join("sandboxes")
            .join(pod)
            .join("ns/net")
    }

    async fn port_forward_url(&mut self, pod: &str) -> String {
        self.c
            .runtime
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }
}

/// `http://host:port/path` → (host:port, /path).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap();
    (host.to_string(), format!("/{path}"))
}

async fn dial(url: &str) -> (TcpStream, String) {
    let (host, path) = split_url(url);
    (TcpStream::connect(host).await.unwrap(), path)
}

/// A TCP server inside the pod's network namespace on 127.0.0.1:`port`:
/// each connection gets `<prefix>`, then an echo of everything it sends,
/// then EOF after the client's. Stops (and closes its socket) on drop.
struct PodEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodEcho {
    fn start(netns: &Path, port: u16, prefix: &'static str) -> PodEcho {
        let listener = std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(netns).unwrap();
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
            })
            .join()
            .unwrap()
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            let _ = c.write_all(prefix.as_bytes());
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 || c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PodEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PodEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads exactly `n` bytes from a stream.
async fn read_n(s: &mut crid_e2e::stream_client::ClientStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match s.read().await.unwrap() {
            Some(d) => got.extend_from_slice(&d),
            None => break,
        }
    }
    got
}

const BARE_404: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What a second use of `url` gets: a bare 404.
async fn assert_404(url: &str) {
    let (mut io, path) = dial(url).await;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    );
    let head = raw_request(&mut io, req.as_bytes()).await.unwrap();
    assert_eq!(head.status, 404);
    assert_eq!(head.raw, BARE_404, "nothing else is revealed");
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_spdy_two_streams_at_once_single_use_url() {
    let mut w = World::start(60).await;
    let pod = w.run_pod("pf-spdy").await;
    let echo = PodEcho::start(&w.netns_pin(&pod), 8080, "pod:");
    let url = w.port_forward_url(&pod).await;
    let (io, path) = dial(&url).await;
    let client = SpdyClient::connect(io, &path, &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("portforward.k8s.io"));
    // Two forwarded connections open at the same time, plus one to a port
    // nobody listens on.
    let mut pairs = Vec::new();
    for (rid, port) in [("0", "8080"), ("1", "8080"), ("2", "8081")] {
        let err = client
            .open(&[("streamtype", "error"), ("port", port), ("requestid", rid)])
            .await
            .unwrap();
        let data = client
            .open(&[("streamtype", "data"), ("port", port), ("requestid", rid)])
            .await
            .unwrap();
        pairs.push((err, data));
    }
    // Both connections answer while both are open.
    pairs[0].1.write(b"first").await.unwrap();
    pairs[1].1.write(b"second").await.unwrap();
    assert_eq!(read_n(&mut pairs[1].1, 10).await, b"pod:second");
    assert_eq!(read_n(&mut pairs[0].1, 9).await, b"pod:first");
    pairs[0].1.write(b"-more").await.unwrap();
    pairs[0].1.close_write().await.unwrap();
    pairs[1].1.close_write().await.unwrap();
    assert_eq!(pairs[0].1.read_to_end().await.unwrap(), b"-more");
    assert!(pairs[1].1.read_to_end().await.unwrap().is_empty());
    assert!(pairs[0].0.read_to_end().await.unwrap().is_empty());
    let refused = String::from_utf8(pairs[2].0.read_to_end().await.unwrap()).unwrap();
    assert!(
        refused.contains("8081") && refused.contains("refused"),
        "{refused}"
    );
    // The URL was single use; an unknown token is refused alike.
    assert_404(&url).await;
    let (host, _) = split_url(&url);
    assert_404(&format!("http://{host}/portforward/{}", "0".repeat(64))).await;
    let (host_url, exec_path) = (format!("http://{host}"), "/exec/nothing");
    assert_404(&format!("{host_url}{exec_path}")).await;
    drop(echo);
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_websocket_and_a_garbage_frame_closes_only_its_connection() {
    let mut w = World::start(60).await;
    let pod = w.run_pod("pf-ws").await;
    let echo = PodEcho::start(&w.netns_pin(&pod), 9090, "ws:");
    // A SPDY connection that gets garbage is closed...
    let url = w.port_forward_url(&pod).await;
    let (io, path) = dial(&url).await;
    let bad = SpdyClient::connect(io, &path, &["portforward.k8s.io"])
        .await
        .unwrap();
    bad.send_garbage(&[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let closed = crid_e2e::wait_for(Duration::from_secs(10), || async {
        bad.is_closed().then_some(())
    })
    .await;
    assert!(closed.is_some(), "the garbage connection is closed");
    // ...while a WebSocket port-forward of the same pod works on.
    let url = w.port_forward_url(&pod).await;
    let (io, path) = dial(&url).await;
    let mut ws = WsClient::connect(io, &format!("{path}?port=9090"), &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("portforward.k8s.io"));
    // The port prefix first on data (0) and error (1).
    let mut prefixes = Vec::new();
    for _ in 0..2 {
        prefixes.push(ws.recv().await.unwrap().unwrap());
    }
    prefixes.sort();
    assert_eq!(
        prefixes,
        vec![
            (0, 9090u16.to_le_bytes().to_vec()),
            (1, 9090u16.to_le_bytes().to_vec())
        ]
    );
    ws.send(0, b"hello").await.unwrap();
    let mut got = Vec::new();
    while got.len() < b"ws:hello".len() {
        let (ch, d) = ws.recv().await.unwrap().unwrap();
        assert_eq!(ch, 0, "{:?}", String::from_utf8_lossy(&d));
        got.extend_from_slice(&d);
    }
    assert_eq!(got, b"ws:hello");
    ws.close().await.unwrap();
    drop(echo);
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_and_bad_requests_are_refused() {
    let mut w = World::start(1).await;
    let pod = w.run_pod("pf-expiry").await;
    let url = w.port_forward_url(&pod).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_404(&url).await;
    // RPC errors: unknown pod / container.
    let e =
        w.c.runtime
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: "nope".into(),
                port: vec![],
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    for e in [
        w.c.runtime
            .exec(cri::ExecRequest {
                container_id: "nope".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        w.c.runtime
            .attach(cri::AttachRequest {
                container_id: "nope".into(),
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
    // A valid token with an unknown subprotocol: 400 from the helper, and
    // the pod still serves the next one.
    let url = w.port_forward_url(&pod).await;
    let (mut io, path) = dial(&url).await;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: nonsense.k8s.io\r\n\r\n"
    );
    let head = raw_request(&mut io, req.as_bytes()).await.unwrap();
    assert_eq!(head.status, 400);
    let url = w.port_forward_url(&pod).await;
    let (io, path) = dial(&url).await;
    SpdyClient::connect(io, &path, &["portforward.k8s.io"])
        .await
        .unwrap();
    w.remove_pod(&pod).await;
}

// ---- exec and ExecSync (running containers) ---------------------------------

use crid_e2e::pods::{sh, Node};

/// A node with a pod running a long sleep; (node, pod, container).
async fn sleeper(name: &str) -> (Node, String, String) {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config(name);
    let pod = n.run_pod(&pod_cfg).await;
    let ctr = n
        .run(&pod, &pod_cfg, sh("main", &n.image, "exec sleep 3600"))
        .await;
    (n, pod, ctr)
}

async fn exec_url(n: &mut Node, ctr: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    n.c.runtime
        .exec(cri::ExecRequest {
            container_id: ctr.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// The v4 error stream's Status JSON, parsed.
fn status_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(bytes)))
}

/// Processes of the container's task other than its main one (exec leftovers).
fn exec_processes(n: &Node, ctr: &str) -> Vec<String> {
    n.ctr(&["tasks", "ps", ctr])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_stdout_stderr_exit_code_and_stdin() {
    let (mut n, pod, ctr) = sleeper("ex-spdy").await;
    let baseline = exec_processes(&n, &ctr).len();

    // echo: stdout and a Success status.
    let url = exec_url(&mut n, &ctr, &["echo", "hello"], false, false).await;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("v4.channel.k8s.io"));
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let mut serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
    assert_eq!(out.read_to_end().await.unwrap(), b"hello\n");
    assert!(serr.read_to_end().await.unwrap().is_empty());
    let st = status_of(&err.read_to_end().await.unwrap());
    assert_eq!(st["status"], "Success", "{st}");

    // stderr and exit 7 on the error stream.
    let url = exec_url(
        &mut n,
        &ctr,
        &["sh", "-c", "echo x >&2; exit 7"],
        false,
        false,
    )
    .await;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let mut serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
    assert_eq!(serr.read_to_end().await.unwrap(), b"x\n");
    assert!(out.read_to_end().await.unwrap().is_empty());
    let st = status_of(&err.read_to_end().await.unwrap());
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "7");

    // cat (a real binary) with stdin and half-close.
    let url = exec_url(&mut n, &ctr, &["/bin/busybox", "cat"], true, false).await;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let input = c.open(&[("streamtype", "stdin")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let _serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
    input.write(b"line one\n").await.unwrap();
    assert_eq!(read_n(&mut out, 9).await, b"line one\n");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    input.write(&big).await.unwrap();
    input.close_write().await.unwrap();
    assert_eq!(out.read_to_end().await.unwrap(), big);
    assert_eq!(
        status_of(&err.read_to_end().await.unwrap())["status"],
        "Success"
    );

    // A client that vanishes mid-stream: the exec process is killed.
    let url = exec_url(
        &mut n,
        &ctr,
        &["/bin/busybox", "sleep", "1000"],
        false,
        false,
    )
    .await;
    let (io, path) = dial(&url).await;
    // A second handle on the socket, to cut the connection under the client.
    let io = io.into_std().unwrap();
    let cut = io.try_clone().unwrap();
    let io = TcpStream::from_std(io).unwrap();
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let _err = c.open(&[("streamtype", "error")]).await.unwrap();
    let _out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let _serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
    let started = crid_e2e::wait_for(Duration::from_secs(10), || async {
        (exec_processes(&n, &ctr).len() > baseline).then_some(())
    })
    .await;
    assert!(started.is_some(), "the exec process runs");
    cut.shutdown(std::net::Shutdown::Both).unwrap();
    let gone = crid_e2e::wait_for(Duration::from_secs(15), || async {
        (exec_processes(&n, &ctr).len() == baseline).then_some(())
    })
    .await;
    assert!(gone.is_some(), "{:?}", exec_processes(&n, &ctr));
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_tty_resize_and_over_websocket() {
    let (mut n, pod, ctr) = sleeper("ex-tty").await;
    // tty: stty size reports the size sent on the resize stream.
    let url = exec_url(
        &mut n,
        &ctr,
        &["sh", "-c", "sleep 1; stty size"],
        true,
        true,
    )
    .await;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let _input = c.open(&[("streamtype", "stdin")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let resize = c.open(&[("streamtype", "resize")]).await.unwrap();
    resize.write(br#"{"Width":123,"Height":45}"#).await.unwrap();
    let got = String::from_utf8(out.read_to_end().await.unwrap()).unwrap();
    assert_eq!(got.trim(), "45 123", "{got:?}");
    assert_eq!(
        status_of(&err.read_to_end().await.unwrap())["status"],
        "Success"
    );

    // WebSocket v5: stdin, close signal, stdout, status on channel 3.
    let url = exec_url(&mut n, &ctr, &["/bin/busybox", "cat"], true, false).await;
    let (io, path) = dial(&url).await;
    let mut ws = WsClient::connect(io, &path, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(0, b"via websocket").await.unwrap();
    ws.send_close_signal(0).await.unwrap();
    let mut stdout = Vec::new();
    let mut status = None;
    while let Some((ch, d)) = ws.recv().await.unwrap() {
        match ch {
            1 => stdout.extend_from_slice(&d),
            3 => status = Some(status_of(&d)),
            _ => {}
        }
    }
    assert_eq!(stdout, b"via websocket");
    assert_eq!(status.unwrap()["status"], "Success");
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_code_timeout_cap_and_missing_binary() {
    // The default handler: the pod's helper is its shim and runs the process.
    let (n, pod, ctr) = sleeper("ex-sync").await;
    exec_sync_behaviour(n, pod, ctr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_behaves_the_same_through_containerds_runc_shim() {
    // The `runc-v2` handler: the process is containerd's (Exec, Start, Wait).
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("ex-sync-v2");
    let pod = n.run_pod_with(&pod_cfg, "runc-v2").await;
    let ctr = n
        .run(&pod, &pod_cfg, sh("main", &n.image, "exec sleep 3600"))
        .await;
    exec_sync_behaviour(n, pod, ctr).await;
}

async fn exec_sync_behaviour(mut n: Node, pod: String, ctr: String) {
    let run = |cmd: &[&str], timeout: i64| cri::ExecSyncRequest {
        container_id: ctr.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let r =
        n.c.runtime
            .exec_sync(run(&["sh", "-c", "echo out; echo err >&2; exit 3"], 0))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );

    // Timeout: DeadlineExceeded, and the process is gone.
    let t0 = std::time::Instant::now();
    let e =
        n.c.runtime
            .exec_sync(run(&["/bin/busybox", "sleep", "30"], 1))
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let ps = n.ctr(&["tasks", "ps", &ctr]);
    assert_eq!(ps.lines().count(), 2, "only the main process is left: {ps}");

    // Over the cap: answered (not hung), capped.
    let r =
        n.c.runtime
            .clone()
            .max_decoding_message_size(32 << 20)
            .exec_sync(run(
                &["/bin/busybox", "head", "-c", "20000000", "/dev/zero"],
                60,
            ))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(r.exit_code, 0);
    assert!(
        r.stdout.len() > 15 << 20 && r.stdout.len() <= 16 << 20,
        "{}",
        r.stdout.len()
    );
    assert!(r.stdout.iter().all(|b| *b == 0));

    // A missing binary: the runtime's message on stderr, non-zero code.
    let r =
        n.c.runtime
            .exec_sync(run(&["/no/such/binary"], 10))
            .await
            .unwrap()
            .into_inner();
    assert_ne!(r.exit_code, 0);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(msg.contains("/no/such/binary"), "{msg}");
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_container_echoing_its_stdin() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("at-cat");
    let pod = n.run_pod(&pod_cfg).await;
    let mut cfg = sh("cat", &n.image, "exec /bin/busybox cat");
    cfg.stdin = true;
    cfg.stdin_once = true;
    let ctr = n.run(&pod, &pod_cfg, cfg).await;
    let url =
        n.c.runtime
            .attach(cri::AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    assert!(url.contains("/attach/"), "{url}");
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let input = c.open(&[("streamtype", "stdin")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let _serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
    input.write(b"ping\n").await.unwrap();
    assert_eq!(read_n(&mut out, 5).await, b"ping\n");
    // stdin_once: ending stdin ends the container's input; cat exits.
    input.close_write().await.unwrap();
    assert!(out.read_to_end().await.unwrap().is_empty());
    assert_eq!(
        status_of(&err.read_to_end().await.unwrap())["status"],
        "Success"
    );
    let s = n.wait_exited(&ctr, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 0);
    let log = std::fs::read_to_string(n.log_dir("at-cat").join("cat.log")).unwrap();
    assert!(log.contains(" stdout F ping"), "{log}");
    n.stop_remove_pod(&pod).await;
}

/// 200 concurrent exec streams on one pod (`CRID_TEST_EXEC_STREAMS=N` for
/// another count).
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_exec_streams_on_one_pod() {
    let (mut n, pod, ctr) = sleeper("ex-200").await;
    let count: usize = std::env::var("CRID_TEST_EXEC_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let t_all = std::time::Instant::now();
    let mut urls = Vec::new();
    for i in 0..count {
        let cmd = format!("echo stream-{i}");
        urls.push(exec_url(&mut n, &ctr, &["sh", "-c", &cmd], false, false).await);
    }
    let mut tasks = Vec::new();
    for (i, url) in urls.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (io, path) = dial(&url).await;
            let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
                .await
                .unwrap();
            let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
            let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
            let _serr = c.open(&[("streamtype", "stderr")]).await.unwrap();
            // 200 processes start through one shim on 2 cores: patience,
            // past the client's 10 s per-read timeout.
            let t0 = std::time::Instant::now();
            let read_all = async |s: &mut crid_e2e::stream_client::ClientStream| {
                let mut all = Vec::new();
                loop {
                    match s.read().await {
                        Ok(Some(d)) => all.extend_from_slice(&d),
                        Ok(None) => return all,
                        Err(e)
                            if e.to_string().contains("timed out")
                                && t0.elapsed() < Duration::from_secs(240) => {}
                        Err(e) => panic!("stream {i}: {e}"),
                    }
                }
            };
            let all = read_all(&mut out).await;
            assert_eq!(all, format!("stream-{i}\n").as_bytes());
            let st = read_all(&mut err).await;
            assert_eq!(status_of(&st)["status"], "Success");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{count} concurrent exec streams done in {:?}",
        t_all.elapsed()
    );
    let ps = n.ctr(&["tasks", "ps", &ctr]);
    assert_eq!(ps.lines().count(), 2, "no exec process left: {ps}");
    n.stop_remove_pod(&pod).await;
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The figure in docs/PERFORMANCE.md: the helper's RSS idle, once its
/// stream runtime runs, and per idle port-forward connection (one open
/// data/error pair each, to a listener in the pod).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement for docs/PERFORMANCE.md"]
async fn helper_rss_per_idle_stream() {
    let mut w = World::start(60).await;
    let pod = w.run_pod("rss").await;
    let _echo = PodEcho::start(&w.netns_pin(&pod), 7070, "");
    let st =
        w.c.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let helper = info["helperPid"].as_u64().unwrap();
    let idle = rss_kib(helper);
    let mut keep = Vec::new();
    let open_one = async |w: &mut World, rid: &str| {
        let url = w.port_forward_url(&pod).await;
        let (io, path) = dial(&url).await;
        let c = SpdyClient::connect(io, &path, &["portforward.k8s.io"])
            .await
            .unwrap();
        let e = c
            .open(&[
                ("streamtype", "error"),
                ("port", "7070"),
                ("requestid", rid),
            ])
            .await
            .unwrap();
        let d = c
            .open(&[("streamtype", "data"), ("port", "7070"), ("requestid", rid)])
            .await
            .unwrap();
        d.write(b"x").await.unwrap();
        (c, e, d)
    };
    let mut first = open_one(&mut w, "0").await;
    assert_eq!(read_n(&mut first.2, 1).await, b"x");
    keep.push(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let one = rss_kib(helper);
    const N: u64 = 100;
    for i in 1..=N {
        let mut c = open_one(&mut w, &i.to_string()).await;
        assert_eq!(read_n(&mut c.2, 1).await, b"x");
        keep.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let many = rss_kib(helper);
    println!(
        "helper RSS: idle {idle} KiB; 1 stream (runtime started) {one} KiB; {} streams {many} KiB; per idle stream {:.1} KiB",
        N + 1,
        (many - one) as f64 / N as f64
    );
    drop(keep);
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_tty_container_with_resize() {
    let mut n = Node::start(vec![]).await;
    let pod_cfg = n.pod_config("at-tty");
    let pod = n.run_pod(&pod_cfg).await;
    let mut cfg = sh("shell", &n.image, "exec /bin/sh");
    cfg.stdin = true;
    cfg.tty = true;
    let ctr = n.run(&pod, &pod_cfg, cfg).await;
    let url =
        n.c.runtime
            .attach(cri::AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                stderr: false,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let _err = c.open(&[("streamtype", "error")]).await.unwrap();
    let input = c.open(&[("streamtype", "stdin")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let resize = c.open(&[("streamtype", "resize")]).await.unwrap();
    resize.write(br#"{"Width":77,"Height":33}"#).await.unwrap();
    // The resize goes through crid (ResizePty on the task): give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    input.write(b"stty size\n").await.unwrap();
    let mut seen = String::new();
    let t0 = std::time::Instant::now();
    while !seen.contains("33 77") && t0.elapsed() < Duration::from_secs(15) {
        match out.read().await {
            Ok(Some(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert!(seen.contains("33 77"), "{seen:?}");
    n.stop_remove_pod(&pod).await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with
/// openssl in `dir`: (ca.pem, server chain, server key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=crid-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let mut w = World::start_with(|c| {
        c.streaming.tls_cert = cert.clone();
        c.streaming.tls_key = key.clone();
    })
    .await;
    let pod = w.run_pod("pf-tls").await;
    let echo = PodEcho::start(&w.netns_pin(&pod), 8443, "tls:");
    let url = w.port_forward_url(&pod).await;
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (host, path) = rest.split_once('/').unwrap();
    let path = format!("/{path}");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let client = SpdyClient::connect(tls, &path, &["portforward.k8s.io"])
        .await
        .unwrap();
    let _err = client
        .open(&[
            ("streamtype", "error"),
            ("port", "8443"),
            ("requestid", "0"),
        ])
        .await
        .unwrap();
    let mut data = client
        .open(&[("streamtype", "data"), ("port", "8443"), ("requestid", "0")])
        .await
        .unwrap();
    data.write(b"secret").await.unwrap();
    assert_eq!(read_n(&mut data, 10).await, b"tls:secret");
    data.close_write().await.unwrap();
    assert!(data.read_to_end().await.unwrap().is_empty());
    drop(echo);
    w.remove_pod(&pod).await;
}

/// `kubectl exec -i … cat` / `kubectl cp` sized input: 8 MiB of stdin
/// written while stdout is read, every byte back in order; with and
/// without a stderr stream (containerd's shim needs a stderr FIFO either
/// way: without one the exec failed to start).
async fn bulk_cat(name: &str, stderr: bool) {
    let (mut n, pod, ctr) = sleeper(name).await;
    let url =
        n.c.runtime
            .exec(cri::ExecRequest {
                container_id: ctr.clone(),
                cmd: vec!["/bin/cat".into()],
                tty: false,
                stdin: true,
                stdout: true,
                stderr,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let (io, path) = dial(&url).await;
    let c = SpdyClient::connect(io, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut err = c.open(&[("streamtype", "error")]).await.unwrap();
    let input = c.open(&[("streamtype", "stdin")]).await.unwrap();
    let mut out = c.open(&[("streamtype", "stdout")]).await.unwrap();
    let _serr = if stderr {
        Some(c.open(&[("streamtype", "stderr")]).await.unwrap())
    } else {
        None
    };
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let send = big.clone();
    let writer = tokio::spawn(async move {
        input.write(&send).await.unwrap();
        input.close_write().await.unwrap();
    });
    let got = out.read_to_end().await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "stdout differs from stdin");
    assert_eq!(
        status_of(&err.read_to_end().await.unwrap())["status"],
        "Success"
    );
    n.stop_remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_cat_streams_megabytes_both_ways() {
    bulk_cat("ex-bulk", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_without_a_stderr_stream_starts_and_streams() {
    bulk_cat("ex-bulk-noerr", false).await;
}
