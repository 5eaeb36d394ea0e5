//! A small NRI plugin for the e2e tests (tests/tests/nri.rs), written
//! against NRI's wire protocol independently of crid's code: the mux
//! (4-byte connection id + 4-byte length frames; connection 1 = plugin
//! service, 2 = runtime service) and ttrpc (10-byte header + protobuf).
//!
//! It registers, appends every event it gets to `--events FILE` (`Method
//! container-or-pod-id` lines) and, on CreateContainer, returns the
//! adjustment its Configure config asks for: lines `env=NAME=VALUE` and
//! `mount=SOURCE:DESTINATION` (a read-only bind). With the config line
//! `evict-after-start=MEMORY_LIMIT`, on PostStartContainer it calls the
//! runtime's UpdateContainers with that memory limit for the container and
//! its eviction. `--hang METHOD` never
//! answers METHOD; `--crash METHOD` exits when METHOD arrives.
//! Connects to `--socket PATH`, or uses fd `$NRI_PLUGIN_SOCKET` when crid
//! started it (pre-installed plugin).

use crid_proto::nri;
use crid_proto::ttrpc;
use prost::Message;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

#[derive(Default)]
struct Args {
    socket: Option<String>,
    name: String,
    idx: String,
    events: Option<String>,
    hang: Option<String>,
    crash: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        name: std::env::var("NRI_PLUGIN_NAME").unwrap_or_else(|_| "test".into()),
        idx: std::env::var("NRI_PLUGIN_IDX").unwrap_or_else(|_| "50".into()),
        ..Default::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--socket" => a.socket = Some(v),
            "--name" => a.name = v,
            "--idx" => a.idx = v,
            "--events" => a.events = Some(v),
            "--hang" => a.hang = Some(v),
            "--crash" => a.crash = Some(v),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn frame(conn: u32, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(4096) {
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn ttrpc_message(stream: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// The adjustment the Configure config asks for.
fn adjustment(config: &str) -> nri::ContainerAdjustment {
    let mut adj = nri::ContainerAdjustment::default();
    for line in config.lines() {
        if let Some(kv) = line.strip_prefix("env=") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            adj.env.push(nri::KeyValue {
                key: k.into(),
                value: v.into(),
            });
        } else if let Some(m) = line.strip_prefix("mount=") {
            let (src, dst) = m.split_once(':').expect("mount=SOURCE:DESTINATION");
            adj.mounts.push(nri::Mount {
                destination: dst.into(),
                r#type: "bind".into(),
                source: src.into(),
                options: vec!["rbind".into(), "ro".into()],
            });
        }
    }
    adj
}

fn main() {
    let args = parse_args();
    let mut sock = match (&args.socket, std::env::var("NRI_PLUGIN_SOCKET")) {
        (Some(p), _) => UnixStream::connect(p).expect("connecting to the NRI socket"),
        (None, Ok(fd)) => {
            let fd: i32 = fd.parse().expect("NRI_PLUGIN_SOCKET is an fd number");
            // SAFETY: crid passed this descriptor to us and nothing else owns it.
            unsafe { UnixStream::from_raw_fd(fd) }
        }
        (None, Err(_)) => panic!("no --socket and no NRI_PLUGIN_SOCKET"),
    };
    let mut log = args.events.as_ref().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("opening the events file")
    });
    let mut record = |line: String| {
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    };

    // RegisterPlugin on the runtime service (we are its client: stream 1).
    let reg = nri::RegisterPluginRequest {
        plugin_name: args.name.clone(),
        plugin_idx: args.idx.clone(),
        nri_version: String::new(),
    };
    let req = ttrpc::Request {
        service: "nri.pkg.api.v1alpha1.Runtime".into(),
        method: "RegisterPlugin".into(),
        payload: reg.encode_to_vec(),
        ..Default::default()
    };
    sock.write_all(&frame(2, &ttrpc_message(1, 1, &req.encode_to_vec())))
        .expect("registering");

    let mut config = String::new();
    // Our requests to the runtime: RegisterPlugin was stream 1.
    let mut next_stream = 1u32;
    let mut wire: Vec<u8> = Vec::new();
    let mut streams: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut buf = [0u8; 65536];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wire.extend_from_slice(&buf[..n]);
        while wire.len() >= 8 {
            let conn = u32::from_be_bytes(wire[0..4].try_into().unwrap());
            let len = u32::from_be_bytes(wire[4..8].try_into().unwrap()) as usize;
            if wire.len() < 8 + len {
                break;
            }
            let payload: Vec<u8> = wire[8..8 + len].to_vec();
            wire.drain(..8 + len);
            let s = streams.entry(conn).or_default();
            s.extend(payload);
            while s.len() >= 10 {
                let blen = u32::from_be_bytes(s[0..4].try_into().unwrap()) as usize;
                if s.len() < 10 + blen {
                    break;
                }
                let stream_id = u32::from_be_bytes(s[4..8].try_into().unwrap());
                let kind = s[8];
                let body: Vec<u8> = s[10..10 + blen].to_vec();
                s.drain(..10 + blen);
                if conn == 2 && kind == 2 && stream_id == 1 {
                    continue; // RegisterPlugin's answer
                }
                if conn == 2 && kind == 2 {
                    let resp = ttrpc::Response::decode(body.as_slice()).expect("a response");
                    let failed = nri::UpdateContainersResponse::decode(resp.payload.as_slice())
                        .map(|r| r.failed.len())
                        .unwrap_or(0);
                    let code = resp.status.map(|s| s.code).unwrap_or(0);
                    record(format!("answer {stream_id} code={code} failed={failed}"));
                    continue;
                }
                if conn != 1 || kind != 1 {
                    continue;
                }
                let req = ttrpc::Request::decode(body.as_slice()).expect("a ttrpc request");
                let method = req.method.clone();
                if args.crash.as_deref() == Some(method.as_str()) {
                    record(format!("crash {method}"));
                    std::process::exit(3);
                }
                let payload = match method.as_str() {
                    "Configure" => {
                        let c = nri::ConfigureRequest::decode(req.payload.as_slice()).unwrap();
                        config = c.config;
                        record(format!("Configure {}", c.runtime_name));
                        nri::ConfigureResponse { events: 0 }.encode_to_vec()
                    }
                    "Synchronize" => {
                        let r = nri::SynchronizeRequest::decode(req.payload.as_slice()).unwrap();
                        record(format!(
                            "Synchronize {} {}",
                            r.pods.len(),
                            r.containers.len()
                        ));
                        nri::SynchronizeResponse::default().encode_to_vec()
                    }
                    _ => {
                        let pc = nri::PodContainerRequest::decode(req.payload.as_slice()).unwrap();
                        let id = match (&pc.container, &pc.pod) {
                            (Some(c), _) => c.id.clone(),
                            (None, Some(p)) => p.id.clone(),
                            _ => String::new(),
                        };
                        record(format!("{method} {id}"));
                        if method == "CreateContainer" {
                            // What earlier plugins injected, as this plugin sees it.
                            for e in pc.container.iter().flat_map(|c| c.env.iter()) {
                                if e.starts_with("NRI_") {
                                    record(format!("{} saw {e}", args.name));
                                }
                            }
                        }
                        let evict_limit = config
                            .lines()
                            .find_map(|l| l.strip_prefix("evict-after-start="))
                            .and_then(|v| v.parse::<i64>().ok());
                        if let (Some(limit), "PostStartContainer") = (evict_limit, method.as_str())
                        {
                            let update = nri::UpdateContainersRequest {
                                update: vec![nri::ContainerUpdate {
                                    container_id: id.clone(),
                                    linux: Some(nri::LinuxContainerUpdate {
                                        resources: Some(nri::LinuxResources {
                                            memory: Some(nri::LinuxMemory {
                                                limit: Some(nri::OptionalInt64 { value: limit }),
                                                ..Default::default()
                                            }),
                                            ..Default::default()
                                        }),
                                    }),
                                    ignore_failure: false,
                                }],
                                evict: vec![nri::ContainerEviction {
                                    container_id: id.clone(),
                                    reason: "test eviction".into(),
                                }],
                            };
                            let req = ttrpc::Request {
                                service: "nri.pkg.api.v1alpha1.Runtime".into(),
                                method: "UpdateContainers".into(),
                                payload: update.encode_to_vec(),
                                ..Default::default()
                            };
                            next_stream += 2;
                            let msg = ttrpc_message(next_stream, 1, &req.encode_to_vec());
                            if sock.write_all(&frame(2, &msg)).is_err() {
                                return;
                            }
                            record(format!("UpdateContainers {id}"));
                        }
                        if method == "CreateContainer" {
                            nri::CreateContainerResponse {
                                adjust: Some(adjustment(&config)),
                                ..Default::default()
                            }
                            .encode_to_vec()
                        } else {
                            Vec::new()
                        }
                    }
                };
                if args.hang.as_deref() == Some(method.as_str()) {
                    record(format!("hanging in {method}"));
                    continue;
                }
                let resp = ttrpc::Response {
                    status: None,
                    payload,
                };
                let msg = ttrpc_message(stream_id, 2, &resp.encode_to_vec());
                if sock.write_all(&frame(1, &msg)).is_err() {
                    return;
                }
            }
        }
    }
}
