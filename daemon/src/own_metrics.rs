//! crid's own Prometheus metrics (not the CRI metrics of pods, which are in
//! `cri/metrics.rs`): per-RPC latency and failures (recorded by the RPC
//! layer), image pulls, pod-helper restarts and container events. They
//! are always counted (a few atomics); the HTTP endpoint that serves them
//! runs only when `[metrics] address` is set.

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

/// The endpoint's path; anything else is 404.
pub const PATH: &str = "/metrics";

/// Labels of the per-RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The RPC name (`RunPodSandbox`).
    pub method: String,
}

/// Labels of a failed RPC.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcErrorLabels {
    /// The RPC name.
    pub method: String,
    /// The gRPC code (`NotFound`).
    pub code: String,
}

/// Labels of a finished pull.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric crid keeps about itself.
pub struct Metrics {
    registry: Registry,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    rpc_errors: Family<RpcErrorLabels, Counter>,
    pulls: Family<PullLabels, Counter>,
    pull_bytes: Counter,
    helper_restarts: Counter,
    container_events: Counter,
}

fn rpc_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: a Version call to a long pull.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            rpc_histogram as fn() -> Histogram,
        );
        registry.register(
            "crid_grpc_request_duration_seconds",
            "Time a CRI call took, by method (streaming calls: until the stream opened)",
            rpc_duration.clone(),
        );
        let rpc_errors = Family::<RpcErrorLabels, Counter>::default();
        registry.register(
            "crid_grpc_request_errors",
            "CRI calls that ended with a gRPC error, by method and code",
            rpc_errors.clone(),
        );
        let pulls = Family::<PullLabels, Counter>::default();
        registry.register(
            "crid_image_pulls",
            "Image pulls crid ran (coalesced identical pulls count once), by result",
            pulls.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register(
            "crid_image_pull_bytes",
            "Bytes received from registries by pulls",
            pull_bytes.clone(),
        );
        let helper_restarts = Counter::default();
        registry.register(
            "crid_pod_helper_restarts",
            "Pod helpers crid restarted after they died",
            helper_restarts.clone(),
        );
        let container_events = Counter::default();
        registry.register(
            "crid_container_events",
            "Container events published to GetContainerEvents subscribers",
            container_events.clone(),
        );
        Metrics {
            registry,
            rpc_duration,
            rpc_errors,
            pulls,
            pull_bytes,
            helper_restarts,
            container_events,
        }
    }

    /// Records one finished CRI call; `code` is the gRPC code, 0 for OK.
    pub fn rpc(&self, method: &str, seconds: f64, code: tonic::Code) {
        let method = method.to_string();
        if code != tonic::Code::Ok {
            self.rpc_errors
                .get_or_create(&RpcErrorLabels {
                    method: method.clone(),
                    code: format!("{code:?}"),
                })
                .inc();
        }
        self.rpc_duration
            .get_or_create(&RpcLabels { method })
            .observe(seconds);
    }

    /// Records one finished pull.
    pub fn pull(&self, ok: bool, bytes: u64) {
        let result = if ok { "ok" } else { "error" };
        self.pulls.get_or_create(&PullLabels { result }).inc();
        self.pull_bytes.inc_by(bytes);
    }

    /// Records a pod-helper restart.
    pub fn helper_restarted(&self) {
        self.helper_restarts.inc();
    }

    /// Records a published container event.
    pub fn container_event(&self) {
        self.container_events.inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The answer to one HTTP request: the metrics on `GET /metrics`, 404 for
/// another path, 405 for another method.
fn answer(method: &http::Method, path: &str) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = if path != PATH {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found; metrics are at /metrics\n".to_string(),
        )
    } else if method != http::Method::GET && method != http::Method::HEAD {
        (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        )
    } else {
        (
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            get().render(),
        )
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// Binds `address` and serves the endpoint until the task is aborted;
/// returns the bound address (port 0 picks one).
pub async fn spawn(
    address: &str,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("metrics endpoint: binding {address}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("metrics endpoint: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                        let resp = answer(req.method(), req.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
                {
                    tracing::debug!(error = %e, "metrics endpoint connection");
                }
            });
        }
    });
    tracing::info!(address = %bound, "metrics endpoint serving {PATH}");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_latency_errors_pulls_and_restarts_are_exposed_with_prometheus_names() {
        let m = Metrics::new();
        m.rpc("Version", 0.002, tonic::Code::Ok);
        m.rpc("ContainerStatus", 0.01, tonic::Code::NotFound);
        m.pull(true, 1000);
        m.pull(false, 5);
        m.helper_restarted();
        m.container_event();
        let text = m.render();
        for line in [
            "# TYPE crid_grpc_request_duration_seconds histogram",
            "crid_grpc_request_duration_seconds_count{method=\"Version\"} 1",
            "crid_grpc_request_duration_seconds_count{method=\"ContainerStatus\"} 1",
            "crid_grpc_request_errors_total{method=\"ContainerStatus\",code=\"NotFound\"} 1",
            "crid_image_pulls_total{result=\"ok\"} 1",
            "crid_image_pulls_total{result=\"error\"} 1",
            "crid_image_pull_bytes_total 1005",
            "crid_pod_helper_restarts_total 1",
            "crid_container_events_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(
            !text.contains("method=\"Version\",code"),
            "no error for an OK call"
        );
        // The 2 ms call is in the 4 ms bucket, not the 1 ms one.
        assert!(
            text.contains(
                "crid_grpc_request_duration_seconds_bucket{le=\"0.001\",method=\"Version\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "crid_grpc_request_duration_seconds_bucket{le=\"0.004\",method=\"Version\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn only_get_of_the_metrics_path_answers_with_metrics() {
        assert_eq!(answer(&http::Method::GET, "/metrics").status(), 200);
        assert_eq!(answer(&http::Method::GET, "/").status(), 404);
        assert_eq!(answer(&http::Method::GET, "/metrics/x").status(), 404);
        assert_eq!(answer(&http::Method::POST, "/metrics").status(), 405);
    }
}
