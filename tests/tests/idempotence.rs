//! The CRI's idempotence contract (issue 17), as the kubelet relies on it
//! when it retries after a restart: StopPodSandbox, RemovePodSandbox,
//! StopContainer and RemoveContainer of an id that does not exist (never
//! did, or already removed) succeed; PodSandboxStatus and ContainerStatus
//! of it are NotFound. An id may be a unique prefix (as with containerd's
//! CRI plugin and crictl); an empty or ambiguous prefix is refused with
//! InvalidArgument rather than treated as "not found", which for stop and
//! remove would silently succeed.

use crid_e2e::pods::{sh, Node};
use crid_proto::cri;
use std::collections::HashSet;
use tonic::Code;

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
const READY: i32 = cri::PodSandboxState::SandboxReady as i32;

/// An id in crid's format that no object has.
const UNKNOWN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.map(|_| Code::Ok).unwrap_or_else(|e| e.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_are_idempotent_and_status_is_not_found() {
    let mut n = Node::start(vec![]).await;

    // Ids that never existed.
    n.stop_container(UNKNOWN, 0).await.unwrap();
    n.stop_container(UNKNOWN, 30).await.unwrap();
    n.remove_container(UNKNOWN).await.unwrap();
    assert_eq!(code(n.status(UNKNOWN).await), Code::NotFound);
    n.stop_pod(UNKNOWN).await.unwrap();
    n.remove_pod(UNKNOWN).await.unwrap();
    assert_eq!(code(n.pod_status(UNKNOWN).await), Code::NotFound);

    // Every stop and remove twice, then once more after the object is gone.
    let pod_cfg = n.pod_config("idem");
    let pod = n.run_pod(&pod_cfg).await;
    let c = n
        .run(&pod, &pod_cfg, sh("idem", &n.image, "exec sleep 1000"))
        .await;
    assert_eq!(n.status(&c).await.unwrap().state, RUNNING);
    n.stop_container(&c, 0).await.unwrap();
    let stopped = n.status(&c).await.unwrap();
    assert_eq!((stopped.state, stopped.exit_code), (EXITED, 137));
    n.stop_container(&c, 0).await.unwrap();
    assert_eq!(
        n.status(&c).await.unwrap(),
        stopped,
        "a second stop changes nothing"
    );
    n.remove_container(&c).await.unwrap();
    n.remove_container(&c).await.unwrap();
    assert_eq!(code(n.status(&c).await), Code::NotFound);
    n.stop_container(&c, 10).await.unwrap();

    n.stop_pod(&pod).await.unwrap();
    n.stop_pod(&pod).await.unwrap();
    let st = n.pod_status(&pod).await.unwrap();
    assert_ne!(st.state, READY);
    n.remove_pod(&pod).await.unwrap();
    n.remove_pod(&pod).await.unwrap();
    assert_eq!(code(n.pod_status(&pod).await), Code::NotFound);
    n.stop_pod(&pod).await.unwrap();
    n.stop_container(&c, 0).await.unwrap();
    n.assert_no_containerd_objects();
}

/// The first hex digit shared by two of `ids`, if any.
fn shared_first_char(ids: &[String]) -> Option<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .map(|id| id[..1].to_string())
        .find(|first| !seen.insert(first.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_and_ambiguous_ids_are_refused_unique_prefixes_work() {
    let mut n = Node::start(vec![]).await;

    // Empty ids name nothing: refused, not "already gone".
    assert_eq!(code(n.stop_container("", 0).await), Code::InvalidArgument);
    assert_eq!(code(n.remove_container("").await), Code::InvalidArgument);
    assert_eq!(code(n.status("").await), Code::InvalidArgument);
    assert_eq!(code(n.stop_pod("").await), Code::InvalidArgument);
    assert_eq!(code(n.remove_pod("").await), Code::InvalidArgument);
    assert_eq!(code(n.pod_status("").await), Code::InvalidArgument);

    // Pods until two ids share their first hex digit (at most 17).
    let mut pods = Vec::new();
    let mut cfgs = Vec::new();
    let shared = loop {
        let cfg = n.pod_config(&format!("amb{}", pods.len()));
        pods.push(n.run_pod(&cfg).await);
        cfgs.push(cfg);
        if let Some(c) = shared_first_char(&pods) {
            break c;
        }
    };
    let e = n.stop_pod(&shared).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("ambiguous"), "{e:?}");
    assert_eq!(code(n.remove_pod(&shared).await), Code::InvalidArgument);
    assert_eq!(code(n.pod_status(&shared).await), Code::InvalidArgument);
    for p in &pods {
        assert_eq!(n.pod_status(p).await.unwrap().state, READY, "{p}");
    }

    // Containers (created, not started) until two ids share a first digit.
    let (pod, pod_cfg) = (pods[0].clone(), cfgs[0].clone());
    let mut ctrs = Vec::new();
    let shared = loop {
        let name = format!("amb{}", ctrs.len());
        ctrs.push(
            n.create(&pod, &pod_cfg, sh(&name, &n.image, "exec sleep 1000"))
                .await
                .unwrap(),
        );
        if let Some(c) = shared_first_char(&ctrs) {
            break c;
        }
    };
    let e = n.stop_container(&shared, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        code(n.remove_container(&shared).await),
        Code::InvalidArgument
    );
    assert_eq!(code(n.status(&shared).await), Code::InvalidArgument);
    for c in &ctrs {
        assert_eq!(n.status(c).await.unwrap().state, CREATED, "{c}");
    }

    // A unique prefix names its object, as crictl users expect.
    let victim = ctrs.pop().unwrap();
    n.start_container(&victim[..12]).await.unwrap();
    assert_eq!(n.status(&victim[..12]).await.unwrap().id, victim);
    n.stop_container(&victim[..12], 0).await.unwrap();
    assert_eq!(n.status(&victim).await.unwrap().state, EXITED);
    n.remove_container(&victim[..12]).await.unwrap();
    assert_eq!(code(n.status(&victim).await), Code::NotFound);
    let last = pods.pop().unwrap();
    n.stop_pod(&last[..12]).await.unwrap();
    n.remove_pod(&last[..12]).await.unwrap();
    assert_eq!(code(n.pod_status(&last).await), Code::NotFound);

    for p in &pods {
        n.stop_remove_pod(p).await;
    }
    n.assert_no_containerd_objects();
}
