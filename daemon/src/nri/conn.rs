//! One plugin connection: NRI's mux over a unix socket with a ttrpc client
//! (crid → plugin, mux connection 1) and a ttrpc server (plugin → crid,
//! connection 2) on it. Unary calls only, which is all NRI uses.
//!
//! Why not the `ttrpc` crate: its client and server own an OS socket each
//! (a raw fd, a listener), while NRI runs both over virtual streams of one
//! socket; the wire format is two protobuf messages behind a 10-byte header
//! (see [`super::frame`]), smaller than the bridging the crate would need.

use super::frame::{self, Message, MessageReader, MuxReader};
use crid_proto::ttrpc;
use futures_util::future::BoxFuture;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

/// Why a call to the plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection is closed (the plugin went away or was disconnected).
    #[error("connection to the plugin is closed")]
    Closed,
    /// No answer within the request timeout.
    #[error("the plugin did not answer within {0:?}")]
    Timeout(Duration),
    /// The plugin answered with an error status (a gRPC code).
    #[error("the plugin failed the request: {message} (code {code})")]
    Status {
        /// gRPC status code.
        code: i32,
        /// The plugin's message.
        message: String,
    },
    /// The answer is not the message it should be.
    #[error("undecodable answer from the plugin: {0}")]
    Decode(String),
}

impl CallError {
    /// Fatal errors disconnect the plugin (timeouts, a dead connection);
    /// an error the plugin returned on purpose does not.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CallError::Status { .. })
    }
}

/// gRPC's Unimplemented code.
pub const CODE_UNIMPLEMENTED: i32 = 12;

/// Serves the runtime service: `(method, request body)` → response body or
/// `(gRPC code, message)`.
pub type Handler = Arc<
    dyn Fn(String, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, (i32, String)>> + Send + Sync,
>;

type Pending = HashMap<u32, oneshot::Sender<Result<Vec<u8>, CallError>>>;

/// A live plugin connection.
pub struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Mutex<Pending>,
    next_stream: AtomicU32,
    closed: watch::Sender<bool>,
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // The map stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    /// Starts reading `stream`; requests from the plugin go to `handler`.
    pub fn start(stream: UnixStream, handler: Handler) -> Arc<Conn> {
        let (mut rd, wr) = stream.into_split();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(wr),
            pending: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            closed: watch::Sender::new(false),
        });
        let me = Arc::clone(&conn);
        tokio::spawn(async move {
            let mut closed = me.closed.subscribe();
            let mut mux = MuxReader::default();
            let mut streams: HashMap<u32, MessageReader> = HashMap::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::select! {
                    r = rd.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    },
                    _ = closed.wait_for(|c| *c) => break,
                };
                mux.push(&buf[..n]);
                if me.drain(&mut mux, &mut streams, &handler).is_err() {
                    tracing::warn!("NRI plugin sent malformed frames; disconnecting");
                    break;
                }
            }
            me.close();
        });
        conn
    }

    fn drain(
        self: &Arc<Self>,
        mux: &mut MuxReader,
        streams: &mut HashMap<u32, MessageReader>,
        handler: &Handler,
    ) -> Result<(), frame::FrameError> {
        while let Some((id, payload)) = mux.next_frame()? {
            let reader = streams.entry(id).or_default();
            reader.push(&payload);
            while let Some(msg) = reader.next_message()? {
                match (id, msg.kind) {
                    (frame::PLUGIN_SERVICE_CONN, frame::TYPE_RESPONSE) => self.answer(msg),
                    (frame::RUNTIME_SERVICE_CONN, frame::TYPE_REQUEST) => {
                        self.serve(msg, Arc::clone(handler))
                    }
                    (conn, kind) => {
                        tracing::debug!(conn, kind, "NRI: ignoring an unexpected message")
                    }
                }
            }
        }
        Ok(())
    }

    fn answer(&self, msg: Message) {
        let Some(tx) = lock(&self.pending).remove(&msg.stream_id) else {
            return;
        };
        let result = match ttrpc::Response::decode(msg.body.as_slice()) {
            Err(e) => Err(CallError::Decode(e.to_string())),
            Ok(r) => match r.status {
                Some(s) if s.code != 0 => Err(CallError::Status {
                    code: s.code,
                    message: s.message,
                }),
                _ => Ok(r.payload),
            },
        };
        let _ = tx.send(result);
    }

    fn serve(self: &Arc<Self>, msg: Message, handler: Handler) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let resp = match ttrpc::Request::decode(msg.body.as_slice()) {
                Err(e) => status_response(3, format!("undecodable request: {e}")),
                Ok(req) => {
                    let method = format!("{}/{}", req.service, req.method);
                    match handler(method, req.payload).await {
                        Ok(payload) => ttrpc::Response {
                            status: None,
                            payload,
                        },
                        Err((code, message)) => status_response(code, message),
                    }
                }
            };
            let out = Message {
                stream_id: msg.stream_id,
                kind: frame::TYPE_RESPONSE,
                flags: 0,
                body: resp.encode_to_vec(),
            };
            let _ = me.write(frame::RUNTIME_SERVICE_CONN, &out.encode()).await;
        });
    }

    async fn write(&self, conn: u32, bytes: &[u8]) -> std::io::Result<()> {
        let wire = frame::mux_encode(conn, bytes);
        self.writer.lock().await.write_all(&wire).await
    }

    /// Calls `service/method` with `req`, waiting at most `timeout`.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        if self.is_closed() {
            return Err(CallError::Closed);
        }
        let stream_id = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(stream_id, tx);
        let body = ttrpc::Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: req.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        }
        .encode_to_vec();
        let msg = Message {
            stream_id,
            kind: frame::TYPE_REQUEST,
            flags: 0,
            body,
        };
        let result = tokio::time::timeout(timeout, async {
            if self
                .write(frame::PLUGIN_SERVICE_CONN, &msg.encode())
                .await
                .is_err()
            {
                return Err(CallError::Closed);
            }
            rx.await.unwrap_or(Err(CallError::Closed))
        })
        .await;
        lock(&self.pending).remove(&stream_id);
        let payload = result.map_err(|_| CallError::Timeout(timeout))??;
        Resp::decode(payload.as_slice()).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the connection is closed.
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Closes the connection: pending calls fail, the reader stops and the
    /// socket is shut down.
    pub fn close(&self) {
        if self.closed.send_replace(true) {
            return;
        }
        for (_, tx) in lock(&self.pending).drain() {
            let _ = tx.send(Err(CallError::Closed));
        }
        if let Ok(mut w) = self.writer.try_lock() {
            let _ = futures_util::FutureExt::now_or_never(w.shutdown());
        }
    }
}

fn status_response(code: i32, message: String) -> ttrpc::Response {
    ttrpc::Response {
        status: Some(ttrpc::Status { code, message }),
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::nri;

    /// The peer's side: reads one ttrpc message of mux connection `conn`.
    async fn read_message(peer: &mut UnixStream, want_conn: u32) -> Message {
        let mut mux = MuxReader::default();
        let mut msgs = MessageReader::default();
        let mut buf = [0u8; 4096];
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            mux.push(&buf[..n]);
            while let Some((id, p)) = mux.next_frame().unwrap() {
                assert_eq!(id, want_conn);
                msgs.push(&p);
            }
            if let Some(m) = msgs.next_message().unwrap() {
                return m;
            }
        }
    }

    fn no_runtime_service() -> Handler {
        Arc::new(|_, _| Box::pin(async { Err((CODE_UNIMPLEMENTED, "none".to_string())) }))
    }

    #[tokio::test]
    async fn a_call_is_answered_by_stream_id() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let conn = Conn::start(ours, no_runtime_service());
        let call = tokio::spawn({
            let conn = Arc::clone(&conn);
            async move {
                conn.call::<_, nri::ConfigureResponse>(
                    "svc",
                    "Configure",
                    &nri::ConfigureRequest::default(),
                    Duration::from_secs(5),
                )
                .await
            }
        });
        let req = read_message(&mut peer, frame::PLUGIN_SERVICE_CONN).await;
        assert_eq!(req.kind, frame::TYPE_REQUEST);
        assert_eq!(req.stream_id % 2, 1, "client streams are odd");
        let r = ttrpc::Request::decode(req.body.as_slice()).unwrap();
        assert_eq!(
            (r.service.as_str(), r.method.as_str()),
            ("svc", "Configure")
        );
        assert_eq!(r.timeout_nano, 5_000_000_000);
        let resp = ttrpc::Response {
            status: None,
            payload: nri::ConfigureResponse { events: 8 }.encode_to_vec(),
        };
        let out = Message {
            stream_id: req.stream_id,
            kind: frame::TYPE_RESPONSE,
            flags: 0,
            body: resp.encode_to_vec(),
        };
        peer.write_all(&frame::mux_encode(
            frame::PLUGIN_SERVICE_CONN,
            &out.encode(),
        ))
        .await
        .unwrap();
        assert_eq!(call.await.unwrap().unwrap().events, 8);
    }

    #[tokio::test]
    async fn a_silent_plugin_times_out_and_a_closed_one_fails_at_once() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let conn = Conn::start(ours, no_runtime_service());
        let started = std::time::Instant::now();
        let r = conn
            .call::<_, nri::Empty>("svc", "X", &nri::Empty {}, Duration::from_millis(200))
            .await;
        assert!(matches!(r, Err(CallError::Timeout(_))), "{r:?}");
        assert!(r.as_ref().is_err_and(CallError::is_fatal));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(peer);
        conn.wait_closed().await;
        let r = conn
            .call::<_, nri::Empty>("svc", "X", &nri::Empty {}, Duration::from_secs(30))
            .await;
        assert!(matches!(r, Err(CallError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn the_plugins_requests_are_served_and_errors_carry_a_status() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let handler: Handler = Arc::new(|method, body| {
            Box::pin(async move {
                if method == "rt/Echo" {
                    Ok(body)
                } else {
                    Err((CODE_UNIMPLEMENTED, format!("no {method}")))
                }
            })
        });
        let _conn = Conn::start(ours, handler);
        for (id, method) in [(1u32, "Echo"), (3, "Other")] {
            let req = ttrpc::Request {
                service: "rt".into(),
                method: method.into(),
                payload: b"ping".to_vec(),
                ..Default::default()
            };
            let msg = Message {
                stream_id: id,
                kind: frame::TYPE_REQUEST,
                flags: 0,
                body: req.encode_to_vec(),
            };
            peer.write_all(&frame::mux_encode(
                frame::RUNTIME_SERVICE_CONN,
                &msg.encode(),
            ))
            .await
            .unwrap();
            let answer = read_message(&mut peer, frame::RUNTIME_SERVICE_CONN).await;
            assert_eq!(answer.stream_id, id);
            let resp = ttrpc::Response::decode(answer.body.as_slice()).unwrap();
            if method == "Echo" {
                assert_eq!(resp.payload, b"ping");
                assert!(resp.status.is_none());
            } else {
                assert_eq!(resp.status.map(|s| s.code), Some(CODE_UNIMPLEMENTED));
            }
        }
    }
}
