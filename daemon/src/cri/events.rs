//! `GetContainerEvents` (the kubelet's evented PLEG): container and sandbox
//! state changes as CRI container events, each with the pod's sandbox status
//! and the statuses of all its containers, as containerd's CRI sends them.
//!
//! Events are published where the records change, under the same locks
//! (container op lock, pod lock), so a container's events follow its state
//! machine: CREATED (CreateContainer done), STARTED (StartContainer),
//! STOPPED (exit recorded: event loop, StopContainer, reconciliation),
//! DELETED (RemoveContainer). Sandboxes: STARTED (RunPodSandbox), STOPPED
//! (StopPodSandbox of a ready pod), DELETED (RemovePodSandbox), with the
//! sandbox id as `container_id`. Building and sending happen under one
//! lock, so every subscriber sees one order and statuses never go back in
//! time. Fan-out and the slow-subscriber rule: [`crate::events`].

use super::Crid;
use crate::container::record::ContainerRecord;
use crate::error::Error;
use crate::events::{EventStream, Hub};
use crate::sandbox::record::SandboxRecord;
use crate::sandbox::Busy;
use crid_proto::cri;
use crid_proto::cri::ContainerEventType;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;

/// One event, shared by every subscriber.
pub type Event = Arc<cri::ContainerEventResponse>;

/// The event hub and the lock that orders publications.
pub struct ContainerEvents {
    hub: Hub<Event>,
    /// Orders publications; holds each sandbox's last published record.
    order: tokio::sync::Mutex<HashMap<String, SandboxRecord>>,
    /// True once crid shuts down: every subscriber's stream ends, so the
    /// graceful shutdown does not wait for streams that never end.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for ContainerEvents {
    fn default() -> Self {
        ContainerEvents {
            hub: Hub::default(),
            order: tokio::sync::Mutex::new(HashMap::new()),
            closed: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl ContainerEvents {
    /// A new subscriber's stream (events from now on), ending at
    /// [`Self::close`] (events it has not read by then are dropped).
    pub fn subscribe(&self) -> EventStream<Event> {
        let mut closed = self.closed.subscribe();
        Box::pin(self.hub.subscribe().take_until(async move {
            // An error means the sender is gone: crid is going away too.
            let _ = closed.wait_for(|c| *c).await;
        }))
    }

    /// Ends every subscriber's stream (crid is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Publishes an event of container `rec`.
pub async fn container(crid: &Crid, rec: &ContainerRecord, kind: ContainerEventType) {
    publish(crid, &rec.id, &rec.sandbox_id, None, kind).await;
}

/// Publishes a sandbox event; `removed` is the record of a sandbox that no
/// longer exists (RemovePodSandbox), taken before it went.
pub async fn sandbox(
    crid: &Crid,
    sandbox_id: &str,
    removed: Option<SandboxRecord>,
    kind: ContainerEventType,
) {
    publish(crid, sandbox_id, sandbox_id, removed, kind).await;
}

async fn publish(
    crid: &Crid,
    container_id: &str,
    sandbox_id: &str,
    removed: Option<SandboxRecord>,
    kind: ContainerEventType,
) {
    // Nobody listening: nothing to build (a later subscriber only sees
    // later events anyway).
    let pod_gone = kind == ContainerEventType::ContainerDeletedEvent && container_id == sandbox_id;
    if crid.events.hub.subscribers() == 0 {
        if pod_gone {
            crid.events.order.lock().await.remove(sandbox_id);
        }
        return;
    }
    let mut last = crid.events.order.lock().await;
    let record = match removed {
        Some(r) => Some(r),
        None => match crid.sandboxes.try_get(sandbox_id) {
            Ok(r) => r,
            // An operation holds the sandbox (a helper restart can take
            // seconds): its last published record stands in, so that
            // publishing, and the container operations that publish,
            // never wait for another pod's work.
            Err(Busy) => match last.get(sandbox_id) {
                Some(r) => Some(r.clone()),
                None => {
                    let sandboxes = Arc::clone(&crid.sandboxes);
                    let id = sandbox_id.to_string();
                    tokio::task::spawn_blocking(move || sandboxes.get(&id))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .flatten()
                }
            },
        },
    };
    let Some(record) = record else {
        tracing::warn!(pod = %sandbox_id, container = %container_id, ?kind,
            "no sandbox for a container event; not sent");
        return;
    };
    if pod_gone {
        last.remove(sandbox_id);
    } else {
        last.insert(sandbox_id.to_string(), record.clone());
    }
    let containers = container_statuses(crid, &record.id);
    let n = crid
        .events
        .hub
        .publish(Arc::new(cri::ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: Some(super::sandbox::status_of(&record)),
            containers_statuses: containers,
        }));
    crate::own_metrics::get().container_event();
    tracing::debug!(container = %container_id, ?kind, subscribers = n, "container event");
}

/// The statuses of every container of sandbox `sandbox_id`, newest first
/// (container events, PodSandboxStatus). The order matters: the kubelet
/// takes PodSandboxStatus's list as it comes and, for each container name,
/// the first status it finds, so an exited earlier instance listed before
/// the running one reads as "not running" and the kubelet starts yet
/// another (its own listing sorts newest first too).
pub fn container_statuses(crid: &Crid, sandbox_id: &str) -> Vec<cri::ContainerStatus> {
    let mut containers: Vec<cri::ContainerStatus> = crid
        .containers
        .of_sandbox(sandbox_id)
        .iter()
        .map(super::container::status_of)
        .collect();
    sort_newest_first(&mut containers);
    containers
}

/// Newest `created_at` first; the id breaks ties so the order is stable.
fn sort_newest_first(statuses: &mut [cri::ContainerStatus]) {
    statuses.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
}

/// The stream `GetContainerEvents` answers with.
pub type ContainerEventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, tonic::Status>> + Send>>;

/// `GetContainerEvents`: every event from now on; a subscriber that falls
/// too far behind gets ResourceExhausted and must relist.
pub fn get_container_events(crid: &Crid) -> ContainerEventStream {
    Box::pin(crid.events.subscribe().map(|r| {
        r.map(|ev| (*ev).clone()).map_err(|e| {
            tracing::warn!(error = %e, "ending a slow container event subscriber");
            tonic::Status::from(Error::ResourceExhausted(e.to_string()))
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Event {
        Arc::new(cri::ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn statuses_go_newest_first_with_ties_by_id() {
        let st = |id: &str, created_at: i64| cri::ContainerStatus {
            id: id.into(),
            created_at,
            ..Default::default()
        };
        let mut v = vec![st("old", 1), st("b", 5), st("new", 9), st("a", 5)];
        sort_newest_first(&mut v);
        let ids: Vec<&str> = v.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["new", "a", "b", "old"]);
    }

    #[tokio::test]
    async fn close_ends_every_stream() {
        let events = ContainerEvents::default();
        let mut a = events.subscribe();
        events.hub.publish(ev("c1"));
        let first = a.next().await.map(|r| r.map(|e| e.container_id.clone()));
        assert_eq!(first, Some(Ok("c1".into())));
        events.hub.publish(ev("c2"));
        events.close();
        // What was not read yet is not delivered: the subscriber relists
        // when it reconnects to the next crid.
        assert!(a.next().await.is_none(), "ended at close");
        // A subscriber arriving after close ends at once.
        assert!(events.subscribe().next().await.is_none());
    }
}
