//! The containerd adapter: crid's only door to containerd. It owns the gRPC
//! channel (connected lazily, so crid starts while containerd is down and
//! reconnects on its own), stamps every request with crid's namespace, and
//! watches containerd's health with backoff.

use crate::error::ContainerdError;
use crid_common::config::ContainerdConfig;
use crid_proto::containerd::services::v1::version_client::VersionClient;
use crid_proto::containerd::services::v1::VersionResponse;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Header containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Shortest and longest wait between health probes while containerd is down.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Interval between probes while containerd is up.
const HEALTHY_INTERVAL: Duration = Duration::from_secs(10);

/// A handle on containerd, cheap to clone.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    address: PathBuf,
    probe_timeout: Duration,
}

impl Containerd {
    /// A lazily connected client; nothing is dialled until the first call.
    pub fn new(cfg: &ContainerdConfig) -> Containerd {
        let path = cfg.address.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://containerd")
            .connect_timeout(Duration::from_secs(cfg.probe_timeout_secs));
        let channel =
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Containerd {
            channel,
            namespace: cfg.namespace.clone(),
            address: cfg.address.clone(),
            probe_timeout: Duration::from_secs(cfg.probe_timeout_secs),
        }
    }

    /// The underlying channel, for the service clients of other modules.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps `msg` in a request carrying crid's namespace.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        // Config validation restricts the namespace to header-safe characters.
        if let Ok(v) = self.namespace.parse() {
            req.metadata_mut().insert(NAMESPACE_HEADER, v);
        }
        req
    }

    /// Asks containerd for its version, bounded by the probe timeout.
    pub async fn version(&self) -> Result<VersionResponse, ContainerdError> {
        let mut client = VersionClient::new(self.channel());
        let call = client.version(self.request(()));
        match tokio::time::timeout(self.probe_timeout, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(ContainerdError {
                op: "version",
                status,
            }),
            Err(_) => Err(ContainerdError {
                op: "version",
                status: tonic::Status::deadline_exceeded(format!(
                    "no answer from {} within {:?}",
                    self.address.display(),
                    self.probe_timeout
                )),
            }),
        }
    }

    /// Probes containerd until crid stops: with exponential backoff while it is
    /// down, at a slow pace while it is up, logging each change of state.
    pub fn spawn_health_watch(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            let mut was_up: Option<bool> = None;
            loop {
                match this.version().await {
                    Ok(v) => {
                        if was_up != Some(true) {
                            tracing::info!(
                                address = %this.address.display(),
                                version = %v.version,
                                revision = %v.revision,
                                "connected to containerd"
                            );
                        }
                        was_up = Some(true);
                        backoff = BACKOFF_MIN;
                        tokio::time::sleep(HEALTHY_INTERVAL).await;
                    }
                    Err(e) => {
                        if was_up != Some(false) {
                            tracing::warn!(
                                address = %this.address.display(),
                                error = %e,
                                "containerd not reachable; retrying with backoff"
                            );
                        } else {
                            tracing::debug!(error = %e, retry_in = ?backoff, "containerd still not reachable");
                        }
                        was_up = Some(false);
                        tokio::time::sleep(backoff).await;
                        backoff = next_backoff(backoff);
                    }
                }
            }
        })
    }
}

/// Doubles the wait, capped at [`BACKOFF_MAX`].
fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![];
        for _ in 0..10 {
            seen.push(d);
            d = next_backoff(d);
        }
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn unreachable_socket_reports_an_error_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ContainerdConfig {
            address: dir.path().join("none.sock"),
            probe_timeout_secs: 1,
            ..Default::default()
        };
        let c = Containerd::new(&cfg);
        let start = std::time::Instant::now();
        assert!(c.version().await.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn requests_carry_the_namespace() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Containerd::new(&ContainerdConfig::default());
            let req = c.request(());
            assert_eq!(req.metadata().get(NAMESPACE_HEADER).unwrap(), "crid");
        });
    }
}
