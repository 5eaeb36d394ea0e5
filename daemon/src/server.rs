//! The CRI socket: created safely, served with the RPC layer, removed on shutdown.

use crate::containerd::Containerd;
use crate::cri::CriService;
use crate::rpc_layer::RpcSpanLayer;
use crid_common::config::Config;
use crid_proto::cri::image_service_server::ImageServiceServer;
use crid_proto::cri::runtime_service_server::RuntimeServiceServer;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use tokio::net::UnixListener;

/// Largest CRI message accepted or sent (the kubelet's own limit).
const MAX_MESSAGE: usize = 16 << 20;
/// How long in-flight calls may run on after a shutdown signal; a client that
/// keeps its connection open must not hold crid up for longer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why crid could not start serving.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The socket's directory could not be made.
    #[error("creating {dir}: {source}")]
    SocketDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process already answers on the socket.
    #[error("{0} is in use by a running process; is another crid running?")]
    InUse(PathBuf),
    /// The path exists and is not a socket; refusing to delete it.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Binding or preparing the socket failed.
    #[error("listening on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The persisted state could not be loaded.
    #[error("loading state: {0}")]
    State(String),
    /// NRI is enabled and its socket could not be set up.
    #[error("NRI: {0}")]
    Nri(std::io::Error),
    /// The streaming listener could not be set up.
    #[error("{0}")]
    Streaming(String),
    /// The metrics endpoint could not be set up.
    #[error("{0}")]
    Metrics(String),
    /// `cgroup_driver = "systemd"` on a node where systemd cannot be asked.
    #[error("{0}")]
    Systemd(String),
    /// The gRPC server failed.
    #[error("serving CRI: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds the CRI socket: parent dirs created, a stale socket replaced, mode 0660.
pub async fn bind_socket(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::SocketDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ServeError::InUse(path.to_path_buf()));
            }
            tracing::info!(socket = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(|source| ServeError::Listen {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let listen_err = |source| ServeError::Listen {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_err)?;
    Ok(listener)
}

/// Serves both CRI services until `shutdown` completes, then removes the socket.
pub async fn serve<F>(config: Config, shutdown: F) -> Result<(), ServeError>
where
    F: std::future::Future<Output = ()> + Send,
{
    // The systemd driver needs systemd answering on D-Bus; refused here, at
    // start, rather than at the first RunPodSandbox.
    if config.cgroup_driver == crid_common::config::CgroupDriver::Systemd {
        tokio::task::spawn_blocking(crate::systemd_cgroups::check_reachable)
            .await
            .map_err(|e| ServeError::Systemd(e.to_string()))?
            .map_err(ServeError::Systemd)?;
    }
    // crid's own Prometheus endpoint, off unless configured; bound first so
    // that a taken address leaves nothing behind.
    let metrics_endpoint = match config.metrics.address.as_str() {
        "" => None,
        addr => Some(
            crate::own_metrics::spawn(addr)
                .await
                .map_err(ServeError::Metrics)?
                .1,
        ),
    };
    let socket = config.socket.clone();
    let listener = match bind_socket(&socket).await {
        Ok(l) => l,
        Err(e) => {
            if let Some(m) = metrics_endpoint {
                m.abort();
            }
            return Err(e);
        }
    };
    let containerd = Containerd::new(&config.containerd);
    let health = containerd.spawn_health_watch();
    // Blocking: with the systemd driver this opens zbus's blocking D-Bus
    // connection, which panics when made on a tokio worker thread.
    let sandboxes = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || crate::sandbox::Sandboxes::open(&config))
            .await
            .map_err(|e| ServeError::State(e.to_string()))?
            .map_err(|e| ServeError::State(e.to_string()))?
    };
    let containers = crate::container::Containers::open(&config)
        .map_err(|e| ServeError::State(e.to_string()))?;
    crate::userns::rootfs::sweep_orphans(&config.runtime_dir, |id| {
        // An id that cannot be resolved counts as known: never remove a
        // directory crid might still own.
        match containers.get(id) {
            Ok(Some(r)) => r.id == id,
            Ok(None) => false,
            Err(_) => true,
        }
    });
    let bound = crate::streaming::listener::bind(&config.streaming)
        .await
        .map_err(ServeError::Streaming)?;
    let streaming = crate::streaming::Streaming::new(
        bound.addr,
        config.streaming.tls(),
        Duration::from_secs(config.streaming.token_ttl_secs),
    );
    let svc = CriService::new(
        config,
        containerd,
        sandboxes,
        std::sync::Arc::new(containers),
        streaming,
    );
    // A sandbox that turns NotReady by itself is a sandbox STOPPED event.
    let weak = std::sync::Arc::downgrade(&svc.crid);
    let rt = tokio::runtime::Handle::current();
    svc.crid
        .sandboxes
        .set_on_not_ready(std::sync::Arc::new(move |id: &str| {
            if let Some(crid) = weak.upgrade() {
                let id = id.to_string();
                rt.spawn(async move {
                    crate::cri::events::sandbox(
                        &crid,
                        &id,
                        None,
                        crid_proto::cri::ContainerEventType::ContainerStoppedEvent,
                    )
                    .await;
                });
            }
        }));
    crate::nri::start(&svc.crid)
        .await
        .map_err(ServeError::Nri)?;
    let stream_listener = bound.spawn(std::sync::Arc::clone(&svc.crid));
    // Before any request: what a crash cut half-way in containerd goes.
    // containerd may be down; crid serves anyway (the next start sweeps).
    match tokio::time::timeout(
        Duration::from_secs(10),
        crate::cri::container_lifecycle::sweep_unrecorded(&svc.crid),
    )
    .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            removed = n,
            "removed containerd containers without a record"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot sweep unrecorded containerd containers"),
        Err(_) => tracing::warn!("sweeping unrecorded containerd containers timed out"),
    }
    // The image index: loaded now, then kept current by containerd's events.
    let idle_trim = crate::alloc::spawn_idle_trim();
    let image_events = svc.crid.images.index().spawn_watch(
        svc.crid.containerd.clone(),
        svc.crid.config.containerd.namespace.clone(),
    );

    // Container exits and OOM kills; reconciles missed ones on (re)subscribe.
    let events =
        crate::cri::container_lifecycle::spawn_event_loop(std::sync::Arc::clone(&svc.crid));
    tracing::info!(socket = %socket.display(), streaming = %svc.crid.streaming.base_url, version = env!("CARGO_PKG_VERSION"), "crid serving CRI v1");

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let crid_at_shutdown = std::sync::Arc::clone(&svc.crid);
    let shutdown = async move {
        shutdown.await;
        // Event subscriptions never end by themselves.
        crid_at_shutdown.events.close();
        let _ = signalled_tx.send(());
    };
    let serving = tonic::transport::Server::builder()
        .layer(RpcSpanLayer)
        .add_service(
            RuntimeServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        );
    let grace_over = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = serving => r,
        _ = grace_over => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    };

    health.abort();
    stream_listener.abort();
    image_events.abort();
    idle_trim.abort();
    events.abort();
    if let Some(m) = metrics_endpoint {
        m.abort();
    }
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "could not remove socket");
    }
    tracing::info!("crid stopped; pods keep running");
    result.map_err(ServeError::from)
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; crid will only stop when killed");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_created_with_parents_and_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/crid.sock");
        let _l = bind_socket(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crid.sock");
        let live = bind_socket(&path).await.unwrap();
        assert!(matches!(
            bind_socket(&path).await,
            Err(ServeError::InUse(_))
        ));
        drop(live); // the file stays behind: a stale socket
        assert!(path.exists());
        let _again = bind_socket(&path).await.unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crid.sock");
        std::fs::write(&path, "keep").unwrap();
        assert!(matches!(
            bind_socket(&path).await,
            Err(ServeError::NotASocket(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
    }
}
