//! Version, Status, RuntimeConfig, Unimplemented RPCs, containerd outages,
//! configuration errors and shutdown, as the kubelet and an operator see them.

use crid_e2e::{test_dir, wait_for, workspace_bin, CridProcess, PrivateContainerd};
use crid_proto::cri;
use std::time::Duration;

fn condition<'a>(resp: &'a cri::StatusResponse, kind: &str) -> &'a cri::RuntimeCondition {
    resp.status
        .as_ref()
        .expect("status present")
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {resp:?}"))
}

/// A private containerd and crid on it with the test config, in a test dir
/// (dropped in reverse: crid, containerd, the dir).
async fn node() -> (tempfile::TempDir, PrivateContainerd, CridProcess) {
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
        .await
        .unwrap();
    let crid = CridProcess::start(CridProcess::test_config(dir.path(), &ctrd.socket()))
        .await
        .unwrap();
    (dir, ctrd, crid)
}

async fn status(crid: &CridProcess, verbose: bool) -> cri::StatusResponse {
    let mut c = crid.clients().await.unwrap();
    c.runtime
        .status(cri::StatusRequest { verbose })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn version_reports_crid_and_cri_v1() {
    let (_dir, _ctrd, crid) = node().await;
    let mut c = crid.clients().await.unwrap();
    let v = c
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crid");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    assert_eq!(
        c.cgroup_driver().await.unwrap(),
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_follows_containerd_and_the_cni_config_dir() {
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
        .await
        .unwrap();
    let config = CridProcess::test_config(dir.path(), &ctrd.socket());
    let conf_dir = config.cni.conf_dir.clone();
    std::fs::create_dir_all(&conf_dir).unwrap();
    let crid = CridProcess::start(config).await.unwrap();

    let s = status(&crid, false).await;
    assert!(condition(&s, "RuntimeReady").status, "{s:?}");
    let net = condition(&s, "NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("no network config"), "{}", net.message);
    assert!(s.info.is_empty(), "info only when verbose");

    // A config naming a plugin that is not installed is not usable.
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let s = status(&crid, false).await;
    let net = condition(&s, "NetworkReady");
    assert!(!net.status);
    assert!(net.message.contains("no-such-plugin"), "{}", net.message);

    // A real one is picked up without a restart.
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[
            {"type":"bridge","bridge":"cridtest0","isGateway":true,"ipMasq":false,
             "ipam":{"type":"host-local","ranges":[[{"subnet":"10.233.0.0/24"}]]}},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let s = status(&crid, true).await;
    assert!(condition(&s, "NetworkReady").status, "{s:?}");
    assert!(condition(&s, "RuntimeReady").status);

    let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(cfg["containerd"]["namespace"], "crid");
    assert_eq!(cfg["socket"], crid.config.socket.display().to_string());
    let cni: serde_json::Value = serde_json::from_str(&s.info["cni"]).unwrap();
    assert_eq!(cni["plugins"], serde_json::json!(["bridge", "portmap"]));
    let ctr: serde_json::Value = serde_json::from_str(&s.info["containerd"]).unwrap();
    assert!(ctr["version"].as_str().unwrap().starts_with("1."), "{ctr}");

    std::fs::remove_file(conf_dir.join("10-test.conflist")).unwrap();
    let s = status(&crid, false).await;
    assert!(!condition(&s, "NetworkReady").status);
}

#[tokio::test(flavor = "multi_thread")]
async fn rpcs_without_their_issue_answer_unimplemented_naming_the_rpc() {
    let (_dir, _ctrd, crid) = node().await;
    let mut c = crid.clients().await.unwrap();
    let err = c
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crid_started_before_containerd_becomes_ready_when_it_comes_up() {
    let dir = test_dir();
    let ctrd_dir = dir.path().join("containerd");
    let socket = PrivateContainerd::socket_for(&ctrd_dir);
    let crid = CridProcess::start(CridProcess::test_config(dir.path(), &socket))
        .await
        .unwrap();

    let s = status(&crid, false).await;
    let rt = condition(&s, "RuntimeReady");
    assert!(!rt.status, "{s:?}");
    assert_eq!(rt.reason, "ContainerdNotReady");
    assert!(
        rt.message.contains(&socket.display().to_string()),
        "{}",
        rt.message
    );

    let _ctrd = PrivateContainerd::start(&ctrd_dir).await.unwrap();
    let ready = wait_for(Duration::from_secs(15), || async {
        let s = status(&crid, false).await;
        condition(&s, "RuntimeReady").status.then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "RuntimeReady stayed false; crid log:\n{}",
        crid.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_going_away_is_reported_and_sigterm_leaves_no_socket() {
    let (_dir, mut ctrd, mut crid) = node().await;
    assert!(condition(&status(&crid, false).await, "RuntimeReady").status);
    ctrd.stop();
    let down = wait_for(Duration::from_secs(10), || async {
        let s = status(&crid, false).await;
        (!condition(&s, "RuntimeReady").status).then_some(())
    })
    .await;
    assert!(
        down.is_some(),
        "RuntimeReady stayed true with containerd stopped"
    );

    let socket = crid.config.socket.clone();
    let st = crid.stop().expect("crid was running");
    assert!(st.success(), "crid exited with {st:?}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn bad_config_is_refused_at_start_naming_the_key() {
    let dir = test_dir();
    let cases = [
        ("[containerd]\nadress = \"/x\"\n", "adress"),
        (
            "[containerd]\nnamespace = \"a/b\"\n",
            "containerd.namespace",
        ),
        ("[log]\nlevel = \"crid=[\"\n", "log.level"),
        (
            "[metrics]\naddress = \"localhost:9090\"\n",
            "metrics.address",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(workspace_bin("crid"))
            .arg("--config")
            .arg(&path)
            .arg("--socket")
            .arg(dir.path().join("never.sock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
        assert!(!dir.path().join("never.sock").exists());
    }
    // A valid config the node cannot honour: the systemd driver without
    // systemd as init. Refused at start (exit 1, not the parse error's 2),
    // saying why and what to use, before any socket exists.
    if !std::path::Path::new("/run/systemd/system").exists() {
        let path = dir.path().join("systemd.toml");
        std::fs::write(&path, "cgroup_driver = \"systemd\"\n").unwrap();
        let out = std::process::Command::new(workspace_bin("crid"))
            .arg("--config")
            .arg(&path)
            .arg("--socket")
            .arg(dir.path().join("never.sock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("systemd") && err.contains("cgroupfs"), "{err}");
        assert!(!dir.path().join("never.sock").exists());
    }
    let out = std::process::Command::new(workspace_bin("crid"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn printed_default_config_is_complete_and_loads() {
    let out = std::process::Command::new(workspace_bin("crid"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "socket",
        "state_dir",
        "runtime_dir",
        "[containerd]",
        "[cni]",
        "[log]",
        "default_runtime",
        "[runtimes.runc]",
        "binary_name",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    let parsed = crid_common::config::Config::parse(&text, std::path::Path::new("-")).unwrap();
    assert_eq!(parsed, crid_common::config::Config::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_one_span_per_cri_call() {
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
        .await
        .unwrap();
    let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
    config.log.format = crid_common::config::LogFormat::Json;
    let crid = CridProcess::start(config).await.unwrap();
    let mut c = crid.clients().await.unwrap();
    // A call that fails (CheckpointContainer stays unimplemented).
    let err = c
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let found = wait_for(Duration::from_secs(5), || async {
        crid.log()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every log line is JSON"))
            .find(|v| v["span"]["method"] == "CheckpointContainer")
    })
    .await
    .expect("a log line in the CheckpointContainer span");
    assert_eq!(found["span"]["name"], "cri");
    assert!(
        found["code"]
            .as_str()
            .unwrap_or_default()
            .contains("Unimplemented"),
        "{found}"
    );
}

/// Sends `bytes` as the request of the unary RPC at `path` and decodes the
/// answer as `R`: how a request that prost cannot produce (invalid UTF-8 in
/// a `string`) reaches crid.
async fn raw_unary<R: prost::Message + Default + Send + 'static>(
    crid: &CridProcess,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<R, tonic::Status> {
    /// Encodes pre-encoded bytes; decodes `R` with prost.
    struct Raw<R>(std::marker::PhantomData<R>);
    struct RawEncoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            use prost::bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl<R: prost::Message + Default + Send + 'static> tonic::codec::Codec for Raw<R> {
        type Encode = Vec<u8>;
        type Decode = R;
        type Encoder = RawEncoder;
        type Decoder = tonic_prost::ProstDecoder<R>;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::default()
        }
    }
    let channel = crid_e2e::crid::channel(&crid.config.socket).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(bytes),
        http::uri::PathAndQuery::from_static(path),
        Raw::<R>(std::marker::PhantomData),
    )
    .await
    .map(|r| r.into_inner())
}

/// `msg` encoded, with the bytes of `marker` replaced by as many bytes that
/// are not UTF-8.
fn with_invalid_utf8(msg: &impl prost::Message, marker: &str) -> Vec<u8> {
    let mut bytes = msg.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker encoded");
    bytes[at..at + marker.len()].fill(0xff);
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_that_do_not_decode_are_invalid_argument_and_create_nothing() {
    let (_dir, _ctrd, crid) = node().await;
    const MARK: &str = "MARKER-NOT-UTF8";
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "utf8".into(),
            uid: "utf8-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: [("app".to_string(), MARK.to_string())].into(),
        ..Default::default()
    };
    let run = cri::RunPodSandboxRequest {
        config: Some(pod.clone()),
        ..Default::default()
    };
    let err = raw_unary::<cri::RunPodSandboxResponse>(
        &crid,
        "/runtime.v1.RuntimeService/RunPodSandbox",
        with_invalid_utf8(&run, MARK),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{err:?}");

    let mut ann = pod.clone();
    ann.labels.clear();
    ann.annotations = [(MARK.to_string(), "v".to_string())].into();
    let create = cri::CreateContainerRequest {
        pod_sandbox_id: "nosuchpod".into(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(ann),
    };
    let err = raw_unary::<cri::CreateContainerResponse>(
        &crid,
        "/runtime.v1.RuntimeService/CreateContainer",
        with_invalid_utf8(&create, MARK),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The same requests, valid, reach the handlers: the codec only maps
    // decode errors.
    let err = raw_unary::<cri::CreateContainerResponse>(
        &crid,
        "/runtime.v1.RuntimeService/CreateContainer",
        prost::Message::encode_to_vec(&create),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let mut c = crid.clients().await.unwrap();
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await;
    assert!(status.is_ok(), "crid keeps serving: {status:?}");
}
