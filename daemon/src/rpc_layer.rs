//! The one tower layer every CRI call passes through: it opens the call's
//! span (method plus the ids the handler records), logs how the call ended,
//! with its gRPC code and duration, and records both in crid's own metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

/// Wraps a gRPC server in [`RpcSpan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpanLayer;

impl<S> Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpan { inner }
    }
}

/// See [`RpcSpanLayer`].
#[derive(Debug, Clone)]
pub struct RpcSpan<S> {
    inner: S,
}

/// The RPC name from a gRPC path (`/runtime.v1.RuntimeService/Version` → `Version`).
pub fn rpc_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for RpcSpan<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    ReqB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let method = rpc_name(req.uri().path()).to_string();
        // Handlers fill the ids in with Span::current().record(..).
        let span = tracing::info_span!(
            "cri",
            method = %method,
            pod = tracing::field::Empty,
            container = tracing::field::Empty,
            image = tracing::field::Empty,
        );
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = span.in_scope(|| inner.call(req));
        Box::pin(
            async move {
                let start = Instant::now();
                let res = fut.await;
                let secs = start.elapsed().as_secs_f64();
                let ms = secs * 1000.0;
                let metrics = crate::own_metrics::get();
                match &res {
                    Ok(resp) => {
                        // Errors of unary calls come as trailers-only responses,
                        // so grpc-status sits in the headers.
                        let code = resp
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0);
                        metrics.rpc(
                            metric_method(&method, code),
                            secs,
                            tonic::Code::from_i32(code),
                        );
                        if code == 0 {
                            tracing::debug!(elapsed_ms = ms, "ok");
                        } else {
                            let msg = resp
                                .headers()
                                .get("grpc-message")
                                .and_then(|v| v.to_str().ok())
                                .map(percent_decode)
                                .unwrap_or_default();
                            let code = tonic::Code::from_i32(code);
                            if code == tonic::Code::Unimplemented || code == tonic::Code::NotFound {
                                tracing::info!(elapsed_ms = ms, ?code, message = %msg, "failed");
                            } else {
                                tracing::warn!(elapsed_ms = ms, ?code, message = %msg, "failed");
                            }
                        }
                    }
                    Err(e) => {
                        metrics.rpc(metric_method(&method, 2), secs, tonic::Code::Unknown);
                        tracing::warn!(elapsed_ms = ms, error = %e, "transport error");
                    }
                }
                res
            }
            .instrument(span),
        )
    }
}

/// The method label of a call's metrics: any path a client sends would
/// otherwise become a label of its own, so a call answered Unimplemented
/// (tonic's answer to an unknown method) counts as `unknown`, except the
/// one real RPC crid leaves unimplemented.
fn metric_method(method: &str, code: i32) -> &str {
    if code == tonic::Code::Unimplemented as i32 && method != "CheckpointContainer" {
        "unknown"
    } else {
        method
    }
}

/// Decodes the percent-encoding gRPC applies to `grpc-message`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(rpc_name("/runtime.v1.RuntimeService/Version"), "Version");
        assert_eq!(rpc_name("/runtime.v1.ImageService/PullImage"), "PullImage");
        assert_eq!(rpc_name("weird"), "weird");
    }

    #[test]
    fn unknown_methods_share_one_metric_label() {
        let unimpl = tonic::Code::Unimplemented as i32;
        assert_eq!(metric_method("Version", 0), "Version");
        assert_eq!(metric_method("ContainerStatus", 5), "ContainerStatus");
        assert_eq!(metric_method("NoSuchRpc", unimpl), "unknown");
        assert_eq!(
            metric_method("CheckpointContainer", unimpl),
            "CheckpointContainer"
        );
    }

    #[test]
    fn grpc_message_decoding() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
