//! The image service: crid pulls images itself (containerd 1.6 has no
//! server-side pull) into containerd's content store, image store and
//! snapshotter, exactly as containerd's own client would, so `ctr` sees
//! the same images.
//!
//! - `reference`: normalising image references.
//! - `hosts`: registry hosts config (containerd's certs.d hosts.toml).
//! - `registry`: registry protocol and auth through oci-client.
//! - `manifest`: manifests, indexes, platform choice, image configs.
//! - `session`: containerd calls carrying namespace and pull lease.
//! - `content`: content store reads, label updates, verifying writer.
//! - `unpack`: layers into chain-ID snapshots through the Diff service.
//! - `store`: image records and their metadata, read from containerd.
//! - `index`: the in-memory index the CRI queries are answered from, kept
//!   current by crid's own changes and containerd's image events.
//! - `pull`: one pull, end to end.
//! - `progress`: the no-progress watchdog.
//! - `fsinfo`: ImageFsInfo.
//!
//! [`Images`] adds coalescing: concurrent pulls of the same reference with
//! the same credentials share one pull.

pub mod content;
pub mod fsinfo;
pub mod hosts;
pub mod index;
pub mod manifest;
pub mod oauth;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod session;
pub mod store;
pub mod unpack;

use crate::containerd::Containerd;
use crate::error::Error;
use crid_common::config::Config;
use crid_proto::cri::AuthConfig;
use index::ImageIndex;
use progress::Progress;
use pull::PullContext;
use reference::ImageRef;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::ImageStore;
use tokio::sync::watch;

/// A pull's outcome as shared with coalesced callers.
type Shared = Option<Result<String, (tonic::Code, String)>>;

/// crid's image service state.
pub struct Images {
    cx: Arc<PullContext>,
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Shared>>>>,
    progress_timeout: Duration,
}

impl Images {
    /// The service for `config`, on `ctrd`.
    pub fn new(config: &Config, ctrd: Containerd) -> Images {
        let store = Arc::new(ImageStore::new(ctrd.clone()));
        Images {
            cx: Arc::new(PullContext {
                index: Arc::new(ImageIndex::new(Arc::clone(&store))),
                store,
                ctrd,
                registry: config.registry.clone(),
                snapshotter: config.containerd.snapshotter.clone(),
                clients: registry::ClientCache::default(),
            }),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            progress_timeout: Duration::from_secs(config.registry.progress_timeout_secs),
        }
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.cx.store
    }

    /// The in-memory image index (CRI queries are answered from it).
    pub fn index(&self) -> &Arc<ImageIndex> {
        &self.cx.index
    }

    /// containerd.
    pub fn containerd(&self) -> &Containerd {
        &self.cx.ctrd
    }

    /// The snapshotter images are unpacked into.
    pub fn snapshotter(&self) -> &str {
        &self.cx.snapshotter
    }

    /// Pulls `image` (coalesced with identical pulls in flight) and returns its id.
    /// The pull runs in its own task: a caller that goes away does not cancel
    /// it for the others.
    pub async fn pull(&self, image: &ImageRef, auth: Option<&AuthConfig>) -> Result<String, Error> {
        let oci_auth = registry::registry_auth(auth)?;
        let server_address = auth.map(|a| a.server_address.clone()).unwrap_or_default();
        let key = coalesce_key(image, auth);
        let mut rx = {
            let mut map = self
                .inflight
                .lock()
                .map_err(|_| Error::Internal("pull table poisoned".into()))?;
            match map.get(&key) {
                Some(rx) => {
                    tracing::debug!(image = %image.name(), "joining a pull in flight");
                    rx.clone()
                }
                None => {
                    let (tx, rx) = watch::channel::<Shared>(None);
                    map.insert(key.clone(), rx.clone());
                    let cx = self.cx.clone();
                    let image = image.clone();
                    let timeout = self.progress_timeout;
                    let inflight = self.inflight.clone();
                    let key = key.clone();
                    let mine = rx.clone();
                    tokio::spawn(async move {
                        let progress = Progress::default();
                        let r = tokio::select! {
                            r = pull::pull(&cx, &image, oci_auth, &server_address, &progress) => r,
                            _ = progress.stalled(timeout) => Err(Error::DeadlineExceeded(format!(
                                "pulling {}: no progress for {}s (received {} bytes); cancelled",
                                image.name(), timeout.as_secs(), progress.bytes()
                            ))),
                        };
                        if let Err(e) = &r {
                            tracing::warn!(image = %image.name(), error = %e, "pull failed");
                        }
                        crate::own_metrics::get().pull(r.is_ok(), progress.bytes());
                        // The pull's buffers are free now: give them back.
                        crate::alloc::trim_soon();
                        // Forget the pull before publishing, so a pull started
                        // after this one's result starts afresh.
                        if let Ok(mut map) = inflight.lock() {
                            if map.get(&key).is_some_and(|r| r.same_channel(&mine)) {
                                map.remove(&key);
                            }
                        }
                        let _ = tx.send(Some(r.map_err(|e| {
                            let st = tonic::Status::from(e);
                            (st.code(), st.message().to_string())
                        })));
                    });
                    rx
                }
            }
        };
        let outcome = loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                break r;
            }
            if rx.changed().await.is_err() {
                break Err((
                    tonic::Code::Internal,
                    "pull task ended without a result".into(),
                ));
            }
        };
        outcome.map_err(|(code, msg)| error_from(code, msg))
    }
}

/// Same reference and same credentials pull once.
fn coalesce_key(image: &ImageRef, auth: Option<&AuthConfig>) -> String {
    let mut h = Sha256::new();
    if let Some(a) = auth {
        for part in [
            &a.username,
            &a.password,
            &a.auth,
            &a.identity_token,
            &a.registry_token,
            &a.server_address,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    format!("{}#{}", image.name(), hex::encode(h.finalize()))
}

/// Rebuilds an error shared between coalesced callers.
fn error_from(code: tonic::Code, msg: String) -> Error {
    use tonic::Code;
    match code {
        Code::NotFound => Error::NotFound(msg),
        Code::InvalidArgument => Error::InvalidArgument(msg),
        Code::Unauthenticated => Error::Unauthenticated(msg),
        Code::DeadlineExceeded => Error::DeadlineExceeded(msg),
        Code::FailedPrecondition => Error::FailedPrecondition(msg),
        Code::AlreadyExists => Error::AlreadyExists(msg),
        _ => Error::Internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_keys_separate_credentials() {
        let img = ImageRef::parse("busybox").unwrap();
        let a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let b = AuthConfig {
            username: "u".into(),
            password: "q".into(),
            ..Default::default()
        };
        assert_eq!(coalesce_key(&img, Some(&a)), coalesce_key(&img, Some(&a)));
        assert_ne!(coalesce_key(&img, Some(&a)), coalesce_key(&img, Some(&b)));
        assert_ne!(coalesce_key(&img, None), coalesce_key(&img, Some(&a)));
    }

    #[test]
    fn shared_errors_keep_their_code() {
        let e = error_from(tonic::Code::Unauthenticated, "x".into());
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unauthenticated);
        let e = error_from(tonic::Code::Unavailable, "x".into());
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::Internal);
    }
}
