//! The pod helper's stream protocols (issue 7): what kubectl exec / attach /
//! port-forward speak once crid's streaming listener has handed the
//! connection over. Transport-level only: no containers, no processes.
//!
//! - [`http_upgrade`]: the HTTP/1.1 upgrade request and the 101 response,
//!   with subprotocol negotiation for SPDY/3.1 and WebSocket.
//! - [`spdy`]: SPDY/3.1 framing and a server session (our own code).
//! - [`websocket`]: RFC 6455 framing and the k8s channel framing.
//! - [`portforward`]: pairing of port-forward's SPDY data/error streams.
//! - [`remotecommand`]: what both transports share: stream roles per
//!   protocol version, the error stream's Status JSON, resize messages.

pub mod http_upgrade;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;

#[cfg(test)]
mod interop_tests;
