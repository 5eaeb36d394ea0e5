//! Task events forwarded to containerd (its ttrpc `Events.Forward`), as a
//! shim publishes them: crid's exit and OOM handling listen for them on
//! containerd's event stream. Sent from one thread so a slow or restarting
//! containerd never holds up a task call; an event that cannot be delivered
//! after a reconnection is logged and dropped (containerd's own Wait and
//! crid's reconciliation cover a lost exit).

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::EventsClient;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::SystemTime;

/// One event: its topic and payload.
pub struct Event {
    /// e.g. `/tasks/exit`.
    pub topic: &'static str,
    /// The event message.
    pub event: Any,
}

/// An event message with containerd's name for it (the `Any` type URL).
/// A constant rather than `MessageFull::descriptor().full_name()`: asking
/// rust-protobuf for a descriptor builds the reflection of the whole proto
/// file set once, hundreds of KiB of heap kept for the helper's life.
trait Named: Message {
    /// The message's full proto name.
    const FULL_NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),*) => {
        $(impl Named for $t {
            const FULL_NAME: &'static str = concat!("containerd.events.", stringify!($t));
        })*
    };
}
named!(
    TaskCreate,
    TaskStart,
    TaskExit,
    TaskDelete,
    TaskOOM,
    TaskExecAdded,
    TaskExecStarted
);

/// Builds an [`Event`] from a containerd event message.
fn event<M: Named>(topic: &'static str, m: &M) -> Event {
    Event {
        topic,
        event: Any {
            type_url: M::FULL_NAME.to_string(),
            value: m.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        },
    }
}

/// Where events go.
pub trait Publish: Send + Sync {
    /// Queues one event.
    fn publish(&self, e: Event);
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    MessageField::some(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    })
}

/// The events a shim sends, by kind.
pub mod make {
    use super::*;

    /// `/tasks/create`.
    pub fn create(id: &str, bundle: &str, pid: u32) -> Event {
        let m = TaskCreate {
            container_id: id.into(),
            bundle: bundle.into(),
            pid,
            ..Default::default()
        };
        event("/tasks/create", &m)
    }
    /// `/tasks/start`.
    pub fn start(id: &str, pid: u32) -> Event {
        let m = TaskStart {
            container_id: id.into(),
            pid,
            ..Default::default()
        };
        event("/tasks/start", &m)
    }
    /// `/tasks/exit` (`exec_id` empty for the init).
    pub fn exit(id: &str, exec_id: &str, pid: u32, code: u32, at: SystemTime) -> Event {
        let m = TaskExit {
            container_id: id.into(),
            id: if exec_id.is_empty() { id } else { exec_id }.into(),
            pid,
            exit_status: code,
            exited_at: timestamp(at),
            ..Default::default()
        };
        event("/tasks/exit", &m)
    }
    /// `/tasks/delete`.
    pub fn delete(id: &str, pid: u32, code: u32, at: SystemTime) -> Event {
        let m = TaskDelete {
            container_id: id.into(),
            id: id.into(),
            pid,
            exit_status: code,
            exited_at: timestamp(at),
            ..Default::default()
        };
        event("/tasks/delete", &m)
    }
    /// `/tasks/oom`.
    pub fn oom(id: &str) -> Event {
        let m = TaskOOM {
            container_id: id.into(),
            ..Default::default()
        };
        event("/tasks/oom", &m)
    }
    /// `/tasks/exec-added`.
    pub fn exec_added(id: &str, exec_id: &str) -> Event {
        let m = TaskExecAdded {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        event("/tasks/exec-added", &m)
    }
    /// `/tasks/exec-started`.
    pub fn exec_started(id: &str, exec_id: &str, pid: u32) -> Event {
        let m = TaskExecStarted {
            container_id: id.into(),
            exec_id: exec_id.into(),
            pid,
            ..Default::default()
        };
        event("/tasks/exec-started", &m)
    }
}

/// Forwards events to containerd over ttrpc.
pub struct Forwarder {
    queue: Mutex<Sender<Event>>,
}

impl Forwarder {
    /// Starts the sending thread for containerd at `address` (a socket path).
    pub fn start(address: PathBuf, namespace: String) -> std::io::Result<Forwarder> {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("shim-events".into())
            .stack_size(256 * 1024)
            .spawn(move || forward(rx, &address, &namespace))?;
        Ok(Forwarder {
            queue: Mutex::new(tx),
        })
    }
}

impl Publish for Forwarder {
    fn publish(&self, e: Event) {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let _ = q.send(e);
    }
}

fn forward(rx: Receiver<Event>, address: &std::path::Path, namespace: &str) {
    let addr = format!("unix://{}", address.display());
    let mut client: Option<EventsClient> = None;
    loop {
        let e = match rx.try_recv() {
            Ok(e) => e,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // Events come in bursts (a container's create, start,
                // exit, delete): between them the connection and the
                // client's threads would only hold memory, so they go.
                client = None;
                match rx.recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            }
        };
        let req = ForwardRequest {
            envelope: MessageField::some(Envelope {
                timestamp: timestamp(SystemTime::now()),
                namespace: namespace.to_string(),
                topic: e.topic.to_string(),
                event: MessageField::some(e.event),
                ..Default::default()
            }),
            ..Default::default()
        };
        // One reconnection per event: containerd may have restarted.
        let mut sent = false;
        for _ in 0..2 {
            if client.is_none() {
                client = ttrpc::Client::connect(&addr).ok().map(EventsClient::new);
            }
            let Some(c) = &client else { break };
            match c.forward(ttrpc::context::with_timeout(5_000_000_000), &req) {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(_) => client = None,
            }
        }
        if !sent {
            crate::log(&format!(
                "could not forward event {} to containerd",
                req.envelope.topic
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn name_is_the_descriptors<M: Named + MessageFull>() {
        assert_eq!(M::FULL_NAME, M::descriptor().full_name());
    }

    #[test]
    fn event_names_are_the_proto_names() {
        name_is_the_descriptors::<TaskCreate>();
        name_is_the_descriptors::<TaskStart>();
        name_is_the_descriptors::<TaskExit>();
        name_is_the_descriptors::<TaskDelete>();
        name_is_the_descriptors::<TaskOOM>();
        name_is_the_descriptors::<TaskExecAdded>();
        name_is_the_descriptors::<TaskExecStarted>();
        let e = make::exec_started("c", "e", 7);
        assert_eq!(e.event.type_url, "containerd.events.TaskExecStarted");
    }
}
