//! Port-forward stream pairing over SPDY (`portforward.k8s.io`): for each
//! forwarded connection the client opens an `error` and a `data` stream
//! (kubectl opens error first) carrying the same `port` and `requestid`
//! headers; the pair is complete once both are open. Several pairs may be
//! in flight at once, for one or several ports.

use std::collections::HashMap;

use super::spdy::session::SpdyStream;

/// A complete data + error stream pair for one forwarded connection.
pub struct PortForwardPair {
    /// Target port inside the pod.
    pub port: u16,
    /// The client's request id.
    pub request_id: String,
    /// Bytes to and from the port.
    pub data: SpdyStream,
    /// Where a connection error is reported (text), then closed.
    pub error: SpdyStream,
}

/// A stream that cannot belong to a pair.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortForwardError {
    /// `streamtype` is neither `data` nor `error`.
    #[error("invalid stream type {0:?}")]
    StreamType(String),
    /// `port` missing, not a number, or 0.
    #[error("invalid port {0:?}")]
    Port(String),
    /// `requestid` missing.
    #[error("missing requestID")]
    RequestId,
    /// Two data or two error streams for one request id.
    #[error("duplicate {0} stream for request {1}")]
    Duplicate(&'static str, String),
    /// Data and error stream name different ports.
    #[error("port mismatch in request {0}")]
    PortMismatch(String),
}

#[derive(Default)]
struct Half {
    port: u16,
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
}

/// Collects streams into pairs by request id.
#[derive(Default)]
pub struct PairCollector {
    pending: HashMap<String, Half>,
}

impl PairCollector {
    /// Adds a newly accepted stream; returns the pair it completes, if any.
    /// On error the stream is dropped (which resets it).
    pub fn add(&mut self, s: SpdyStream) -> Result<Option<PortForwardPair>, PortForwardError> {
        let h = s.headers();
        let kind = match h.get("streamtype") {
            Some("data") => "data",
            Some("error") => "error",
            other => return Err(PortForwardError::StreamType(other.unwrap_or("").into())),
        };
        let port_s = h.get("port").unwrap_or("");
        let port = match port_s.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(PortForwardError::Port(port_s.into())),
        };
        let rid = h
            .get("requestid")
            .filter(|r| !r.is_empty())
            .ok_or(PortForwardError::RequestId)?
            .to_string();
        let half = self.pending.entry(rid.clone()).or_insert_with(|| Half {
            port,
            ..Half::default()
        });
        if half.port != port {
            return Err(PortForwardError::PortMismatch(rid));
        }
        let slot = if kind == "data" {
            &mut half.data
        } else {
            &mut half.error
        };
        if slot.is_some() {
            return Err(PortForwardError::Duplicate(kind, rid));
        }
        *slot = Some(s);
        if half.data.is_some() && half.error.is_some() {
            if let Some(Half {
                port,
                data: Some(data),
                error: Some(error),
            }) = self.pending.remove(&rid)
            {
                return Ok(Some(PortForwardPair {
                    port,
                    request_id: rid,
                    data,
                    error,
                }));
            }
        }
        Ok(None)
    }

    /// Request ids with only one stream so far.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
