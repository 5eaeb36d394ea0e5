//! The pod helper's stream protocols (issue 7): what kubectl exec / attach /
//! port-forward speak once crid's streaming listener has handed the
//! connection over.
//!
//! - [`http_upgrade`]: the HTTP/1.1 upgrade request and the 101 response,
//!   with subprotocol negotiation for SPDY/3.1 and WebSocket.
//! - [`spdy`]: SPDY/3.1 framing and a server session (our own code).
//! - [`websocket`]: RFC 6455 framing and the k8s channel framing.
//! - [`portforward`]: pairing of port-forward's SPDY data/error streams.
//! - [`remotecommand`]: what both transports share: stream roles per
//!   protocol version, the error stream's Status JSON, resize messages.
//! - [`fifos`]: an exec process's FIFOs.
//! - [`server`]: serving handed-off connections and ExecSync output.

pub mod fifos;
#[allow(dead_code)] // a complete protocol layer; tests use all of it
pub mod http_upgrade;
#[allow(dead_code)] // a complete protocol layer; tests use all of it
pub mod portforward;
#[allow(dead_code)] // a complete protocol layer; tests use all of it
pub mod remotecommand;
pub mod server;
#[allow(dead_code)] // a complete protocol layer; tests use all of it
pub mod spdy;
#[allow(dead_code)] // a complete protocol layer; tests use all of it
pub mod websocket;

#[cfg(test)]
mod interop_tests;
