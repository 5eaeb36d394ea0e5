//! Our server-side protocol stack against the independent test client
//! (`crid_e2e::stream_client`) over an in-process tokio duplex: upgrade,
//! stream setup, data both ways, half-close, resize, exit status, port
//! forward pairs, and bad input.
//!
//! The "process" here is a fake: it echoes stdin to stdout, reports resizes
//! on stdout, writes a fixed line to stderr and exits with a given code once
//! stdin ends. Real processes arrive with the rest of issue 7.

use std::time::Duration;

use crid_e2e::stream_client::{raw_request, SpdyClient, WsClient};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};

use super::http_upgrade::{
    error_response, negotiate, read_request, switching_protocols, Endpoint, Prefixed, Transport,
};
use super::portforward::PairCollector;
use super::remotecommand::{
    accept_spdy_streams, error_stream_payload, ResizeDecoder, StreamOptions, StreamRole, Version,
};
use super::spdy::session::{Session, SessionConfig};
use super::websocket::{self, port_forward_channels, port_prefix, ChannelCodec, ChannelMessage};

const STDERR_LINE: &[u8] = b"to-stderr\n";

/// Upgrades `io` and serves one exec with the fake process.
async fn serve_exec<IO>(mut io: IO, opts: StreamOptions, exit: i32)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((req, rest)) = read_request(&mut io).await else {
        let _ = io.write_all(&error_response(400)).await;
        return;
    };
    let neg = match negotiate(&req, Endpoint::RemoteCommand) {
        Ok(n) => n,
        Err(e) => {
            let _ = io.write_all(&error_response(e.http_status())).await;
            return;
        }
    };
    if io.write_all(&switching_protocols(&neg)).await.is_err() {
        return;
    }
    let io = Prefixed::new(rest, io);
    let Some(version) = neg.version else { return };
    match neg.transport {
        Transport::Spdy => spdy_exec(io, opts, version, exit).await,
        Transport::WebSocket { base64, .. } => ws_exec(io, version, base64, exit).await,
    }
}

async fn spdy_exec<IO>(io: Prefixed<IO>, opts: StreamOptions, v: Version, exit: i32)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut session = Session::start(io, SessionConfig::default()).unwrap();
    let streams = tokio::time::timeout(
        Duration::from_secs(5),
        accept_spdy_streams(&mut session, opts, v),
    )
    .await
    .expect("streams within 5 s")
    .expect("all expected streams");
    let mut stdout = streams.stdout.expect("stdout");
    let mut error = streams.error.expect("error");
    let mut stdin = streams.stdin;
    let mut resize = streams.resize;
    let mut decoder = ResizeDecoder::default();
    // Resize first: its frames precede stdin's FIN on the wire.
    loop {
        tokio::select! {
            biased;
            r = async { resize.as_mut().unwrap().read().await }, if resize.is_some() => {
                match r {
                    Ok(Some(d)) => {
                        for sz in decoder.feed(&d).unwrap() {
                            let line = format!("resize {}x{}\n", sz.width, sz.height);
                            stdout.write(line.as_bytes()).await.unwrap();
                        }
                    }
                    _ => resize = None,
                }
            }
            r = async { stdin.as_mut().unwrap().read().await }, if stdin.is_some() => {
                match r.unwrap() {
                    Some(d) => stdout.write(&d).await.unwrap(),
                    None => break,
                }
            }
            else => break,
        }
    }
    if let Some(mut e) = streams.stderr {
        e.write(STDERR_LINE).await.unwrap();
        e.close_write().await.unwrap();
    }
    stdout.close_write().await.unwrap();
    if let Some(p) = error_stream_payload(v, Ok(exit)) {
        error.write(&p).await.unwrap();
    }
    error.close_write().await.unwrap();
    session.close().await;
}

async fn ws_exec<IO>(io: Prefixed<IO>, v: Version, base64: bool, exit: i32)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rx, tx) = websocket::server(io, websocket::WsConfig::default());
    let codec = ChannelCodec {
        base64,
        close_signal: v.close_signal(),
    };
    let mut decoder = ResizeDecoder::default();
    let out = StreamRole::Stdout.channel();
    while let Ok(Some(msg)) = rx.recv().await {
        match codec.decode(msg).unwrap() {
            Some(ChannelMessage::Data { channel: 0, data }) => {
                if data == b"quit" {
                    break;
                }
                tx.send(&codec.encode(out, &data)).await.unwrap();
            }
            Some(ChannelMessage::Data { channel: 4, data }) => {
                for sz in decoder.feed(&data).unwrap() {
                    let line = format!("resize {}x{}\n", sz.width, sz.height);
                    tx.send(&codec.encode(out, line.as_bytes())).await.unwrap();
                }
            }
            Some(ChannelMessage::Close { channel: 0 }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    tx.send(&codec.encode(2, STDERR_LINE)).await.unwrap();
    if let Some(p) = error_stream_payload(v, Ok(exit)) {
        tx.send(&codec.encode(3, &p)).await.unwrap();
    }
    tx.close(websocket::CLOSE_NORMAL).await.unwrap();
}

/// Upgrades `io` for port-forward; data streams echo upper-cased.
async fn serve_port_forward(mut io: DuplexStream) {
    let (req, rest) = read_request(&mut io).await.unwrap();
    let neg = match negotiate(&req, Endpoint::PortForward) {
        Ok(n) => n,
        Err(e) => {
            let _ = io.write_all(&error_response(e.http_status())).await;
            return;
        }
    };
    io.write_all(&switching_protocols(&neg)).await.unwrap();
    let io = Prefixed::new(rest, io);
    match neg.transport {
        Transport::Spdy => {
            let mut session = Session::start(io, SessionConfig::default()).unwrap();
            let mut pairs = PairCollector::default();
            while let Some(s) = session.accept().await {
                if let Some(pair) = pairs.add(s).unwrap() {
                    tokio::spawn(async move {
                        let (mut r, mut w) = pair.data.into_split();
                        while let Ok(Some(d)) = r.read().await {
                            let mut d = d.to_ascii_uppercase();
                            d.extend_from_slice(format!(" via {}", pair.port).as_bytes());
                            w.write(&d).await.unwrap();
                        }
                        w.close_write().await.unwrap();
                        let mut e = pair.error;
                        e.close_write().await.unwrap();
                        // Hold the error stream until the client is done.
                        let _ = e.read().await;
                    });
                }
            }
        }
        Transport::WebSocket { base64, .. } => {
            let ports: Vec<u16> = req
                .query_values("port")
                .iter()
                .map(|p| p.parse().unwrap())
                .collect();
            let (mut rx, tx) = websocket::server(io, websocket::WsConfig::default());
            let codec = ChannelCodec {
                base64,
                close_signal: false,
            };
            for (i, p) in ports.iter().enumerate() {
                let (d, e) = port_forward_channels(i).unwrap();
                tx.send(&codec.encode(d, &port_prefix(*p))).await.unwrap();
                tx.send(&codec.encode(e, &port_prefix(*p))).await.unwrap();
            }
            while let Ok(Some(msg)) = rx.recv().await {
                if let Some(ChannelMessage::Data { channel, data }) = codec.decode(msg).unwrap() {
                    let port = ports[usize::from(channel / 2)];
                    let mut d = data.to_ascii_uppercase();
                    d.extend_from_slice(format!(" via {port}").as_bytes());
                    tx.send(&codec.encode(channel, &d)).await.unwrap();
                }
            }
        }
    }
}

fn exec_opts(tty: bool) -> StreamOptions {
    StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty,
    }
}

fn pair() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(256 * 1024)
}

/// Waits (up to 1 s) for the server to have closed the client's connection.
async fn wait_closed(c: &SpdyClient) {
    for _ in 0..50 {
        if c.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connection still open");
}

const ALL_SPDY: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[tokio::test]
async fn spdy_exec_stdin_stdout_stderr_and_exit_code() {
    let (client_io, server_io) = pair();
    let server = tokio::spawn(serve_exec(server_io, exec_opts(false), 7));
    let c = SpdyClient::connect(client_io, "/exec/token", ALL_SPDY)
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("v4.channel.k8s.io"));
    // kubectl's order: error first, then stdin, stdout, stderr.
    let mut error = c.open(&[("streamType", "error")]).await.unwrap();
    let stdin = c.open(&[("streamType", "stdin")]).await.unwrap();
    let mut stdout = c.open(&[("streamType", "stdout")]).await.unwrap();
    let mut stderr = c.open(&[("streamType", "stderr")]).await.unwrap();
    c.ping(1).await.unwrap();
    stdin.write(b"hello ").await.unwrap();
    // More than the 64 KiB window, which this client never updates.
    let big = vec![b'x'; 200 * 1024];
    stdin.write(&big).await.unwrap();
    stdin.close_write().await.unwrap();
    let out = stdout.read_to_end().await.unwrap();
    assert_eq!(out.len(), 6 + big.len());
    assert!(out.starts_with(b"hello xxx"));
    assert_eq!(stderr.read_to_end().await.unwrap(), STDERR_LINE);
    let status: serde_json::Value =
        serde_json::from_slice(&error.read_to_end().await.unwrap()).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn spdy_tty_exec_with_resize_and_success() {
    let (client_io, server_io) = pair();
    let server = tokio::spawn(serve_exec(server_io, exec_opts(true), 0));
    let c = SpdyClient::connect(client_io, "/exec/t", &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut error = c.open(&[("streamType", "error")]).await.unwrap();
    let stdin = c.open(&[("streamType", "stdin")]).await.unwrap();
    let mut stdout = c.open(&[("streamType", "stdout")]).await.unwrap();
    let resize = c.open(&[("streamType", "resize")]).await.unwrap();
    // Two sizes, the second split across frames.
    resize
        .write(br#"{"Width":100,"Height":50}{"Width":"#)
        .await
        .unwrap();
    resize.write(br#"120,"Height":40}"#).await.unwrap();
    stdin.write(b"typed").await.unwrap();
    stdin.close_write().await.unwrap();
    let out = String::from_utf8(stdout.read_to_end().await.unwrap()).unwrap();
    assert_eq!(out, "resize 100x50\nresize 120x40\ntyped");
    let status: serde_json::Value =
        serde_json::from_slice(&error.read_to_end().await.unwrap()).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    // The server ends the connection: GOAWAY OK, then EOF.
    wait_closed(&c).await;
    assert_eq!(c.goaway(), Some((7, 0)), "GOAWAY OK naming the last stream");
    drop(resize);
}

#[tokio::test]
async fn spdy_v2_exit_code_is_text() {
    let (client_io, server_io) = pair();
    tokio::spawn(serve_exec(server_io, exec_opts(false), 3));
    let c = SpdyClient::connect(client_io, "/exec/t", &["v2.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("v2.channel.k8s.io"));
    let mut error = c.open(&[("streamType", "error")]).await.unwrap();
    let stdin = c.open(&[("streamType", "stdin")]).await.unwrap();
    let _stdout = c.open(&[("streamType", "stdout")]).await.unwrap();
    let _stderr = c.open(&[("streamType", "stderr")]).await.unwrap();
    stdin.close_write().await.unwrap();
    let text = String::from_utf8(error.read_to_end().await.unwrap()).unwrap();
    assert!(text.contains("exit code 3"), "{text}");
}

#[tokio::test]
async fn spdy_port_forward_two_pairs_at_once() {
    let (client_io, server_io) = pair();
    tokio::spawn(serve_port_forward(server_io));
    let c = SpdyClient::connect(client_io, "/portforward/t", &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("portforward.k8s.io"));
    let mut streams = Vec::new();
    for (rid, port) in [("0", "80"), ("1", "443")] {
        let err = c
            .open(&[("streamType", "error"), ("port", port), ("requestID", rid)])
            .await
            .unwrap();
        let data = c
            .open(&[("streamType", "data"), ("port", port), ("requestID", rid)])
            .await
            .unwrap();
        streams.push((port, err, data));
    }
    // Interleave both connections.
    for (_, _, d) in &streams {
        d.write(b"hello").await.unwrap();
    }
    for (port, mut err, mut data) in streams {
        data.close_write().await.unwrap();
        let got = String::from_utf8(data.read_to_end().await.unwrap()).unwrap();
        assert_eq!(got, format!("HELLO via {port}"));
        assert_eq!(err.read_to_end().await.unwrap(), b"");
    }
}

#[tokio::test]
async fn websocket_v5_exec_with_close_signal() {
    let (client_io, server_io) = pair();
    let server = tokio::spawn(serve_exec(server_io, exec_opts(false), 0));
    let mut ws = WsClient::connect(
        client_io,
        "/exec/t",
        &["v5.channel.k8s.io", "v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.ping(b"p1").await.unwrap();
    ws.send(4, br#"{"Width":80,"Height":24}"#).await.unwrap();
    ws.send(0, b"abc").await.unwrap();
    ws.send_close_signal(0).await.unwrap();
    let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
    while let Some(m) = ws.recv().await.unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        vec![
            (1, b"resize 80x24\n".to_vec()),
            (1, b"abc".to_vec()),
            (2, STDERR_LINE.to_vec()),
            (3, br#"{"metadata":{},"status":"Success"}"#.to_vec()),
        ]
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn websocket_v4_base64_exec_exit_code() {
    let (client_io, server_io) = pair();
    tokio::spawn(serve_exec(server_io, exec_opts(false), 42));
    let mut ws = WsClient::connect(client_io, "/exec/t", &["v4.base64.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    ws.send(0, &[0, 1, 2, 255]).await.unwrap();
    ws.send(0, b"quit").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some((1, vec![0, 1, 2, 255])));
    assert_eq!(ws.recv().await.unwrap(), Some((2, STDERR_LINE.to_vec())));
    let (ch, status) = ws.recv().await.unwrap().unwrap();
    assert_eq!(ch, 3);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "42");
    assert_eq!(ws.recv().await.unwrap(), None);
}

#[tokio::test]
async fn websocket_port_forward_port_prefix_and_echo() {
    let (client_io, server_io) = pair();
    tokio::spawn(serve_port_forward(server_io));
    let mut ws = WsClient::connect(
        client_io,
        "/portforward/t?port=8080&port=9090",
        &["v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        prefixes.push(ws.recv().await.unwrap().unwrap());
    }
    assert_eq!(
        prefixes,
        vec![
            (0, 8080u16.to_le_bytes().to_vec()),
            (1, 8080u16.to_le_bytes().to_vec()),
            (2, 9090u16.to_le_bytes().to_vec()),
            (3, 9090u16.to_le_bytes().to_vec()),
        ]
    );
    ws.send(2, b"second").await.unwrap();
    ws.send(0, b"first").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some((2, b"SECOND via 9090".to_vec()))
    );
    assert_eq!(
        ws.recv().await.unwrap(),
        Some((0, b"FIRST via 8080".to_vec()))
    );
    ws.close().await.unwrap();
}

#[tokio::test]
async fn bad_upgrades_get_a_bare_400() {
    let cases: &[&[u8]] = &[
        // Unknown subprotocol.
        b"POST /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v99.channel.k8s.io\r\n\r\n",
        // Not an upgrade.
        b"GET /exec/t HTTP/1.1\r\nHost: x\r\n\r\n",
        // Malformed request line.
        b"\x16\x03\x01\x02\x00 garbage\r\n\r\n",
        // WebSocket without a key.
        b"GET /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ];
    for req in cases {
        let (mut client_io, server_io) = pair();
        let server = tokio::spawn(serve_exec(server_io, exec_opts(false), 0));
        let head = raw_request(&mut client_io, req).await.unwrap();
        assert_eq!(head.status, 400, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(
            head.raw,
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        server.await.unwrap();
    }
    // An oversized head.
    let (mut client_io, server_io) = pair();
    let server = tokio::spawn(serve_exec(server_io, exec_opts(false), 0));
    let mut big = b"POST /exec/t HTTP/1.1\r\n".to_vec();
    while big.len() < 20 * 1024 {
        big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    let head = raw_request(&mut client_io, &big).await.unwrap();
    assert_eq!(head.status, 400);
    server.await.unwrap();
}

#[tokio::test]
async fn spdy_garbage_frame_closes_only_that_connection() {
    let (client_io, server_io) = pair();
    let server = tokio::spawn(async move {
        let mut io = server_io;
        let (req, rest) = read_request(&mut io).await.unwrap();
        let neg = negotiate(&req, Endpoint::RemoteCommand).unwrap();
        io.write_all(&switching_protocols(&neg)).await.unwrap();
        let mut s = Session::start(Prefixed::new(rest, io), SessionConfig::default()).unwrap();
        let mut st = s.accept().await.unwrap();
        // The stream sees the connection end, not a clean EOF.
        let r = st.read().await;
        assert!(r.is_err(), "{r:?}");
        assert!(s.accept().await.is_none());
    });
    let c = SpdyClient::connect(client_io, "/exec/t", &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let _e = c.open(&[("streamType", "error")]).await.unwrap();
    // A control frame of version 2 with a bogus body.
    c.send_garbage(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 2, 0xde, 0xad])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    wait_closed(&c).await;
    assert_eq!(
        c.goaway(),
        Some((1, 1)),
        "GOAWAY PROTOCOL_ERROR after stream 1"
    );
}

/// Our server against Go's `moby/spdystream` (what kubectl and the kubelet
/// use) driven by `tests/interop/spdystream_client.go`. Needs `go` and
/// Debian's `golang-github-docker-spdystream-dev`, hence ignored by default:
/// `cargo test -p crid-pod-helper -- --ignored spdystream`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs go and golang-github-docker-spdystream-dev"]
async fn spdystream_go_client_interop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        serve_exec(sock, exec_opts(false), 7).await;
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/interop/spdystream_client.go"
    );
    // A cache of its own: CI may run without $HOME, where go has no default.
    let gocache = crid_e2e::test_dir();
    let run = tokio::process::Command::new("go")
        .args(["run", script, &addr.to_string()])
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOCACHE", gocache.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("go client finished within 120 s")
        .expect("running go");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go client failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("stdout_len=204805 stdout_ok=true"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"stderr="to-stderr\n""#), "{stdout}");
    assert!(stdout.contains(r#""reason":"NonZeroExitCode""#), "{stdout}");
    assert!(
        stdout.contains(r#""causes":[{"reason":"ExitCode","message":"7"}]"#),
        "{stdout}"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resident memory per idle SPDY connection with one open stream (the
/// figure in docs/PERFORMANCE.md):
/// `cargo test -p crid-pod-helper --release -- --ignored memory_per_spdy --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "measurement; run alone"]
async fn memory_per_spdy_connection() {
    use super::spdy::frame::{Frame, FrameEncoder};
    use super::spdy::headers::Headers;
    use tokio::io::AsyncReadExt;
    const N: usize = 200;
    // Every connection gets the same bytes: the first block of a fresh
    // context is always encoded the same way.
    let mut syn = Vec::new();
    FrameEncoder::new()
        .unwrap()
        .encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new().with("streamtype", "stdout"),
            },
            &mut syn,
        )
        .unwrap();
    let before = rss_kib();
    let mut keep = Vec::new();
    for _ in 0..N {
        let (mut c, s) = tokio::io::duplex(64 * 1024);
        let mut session = Session::start(s, SessionConfig::default()).unwrap();
        c.write_all(&syn).await.unwrap();
        let stream = session.accept().await.unwrap();
        let mut reply = [0u8; 8];
        c.read_exact(&mut reply).await.unwrap();
        keep.push((c, session, stream));
    }
    let after = rss_kib();
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    println!(
        "RSS before {before} KiB, after {N} connections {after} KiB: {per:.1} KiB per connection"
    );
    assert!(per < 1024.0);
}
