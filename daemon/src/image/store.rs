//! containerd's image store as the CRI sees it: records (names → target
//! descriptor) and each image's metadata resolved from the content store
//! for the node's platform. Grouping by image id and caching live in the
//! in-memory index (`index.rs`), which answers the CRI's queries.

use super::content;
use super::manifest::{self, Parsed};
use super::reference::is_digest;
use super::session::{cerr, Session};
use super::unpack::chain_ids;
use crate::containerd::Containerd;
use crate::error::Error;
use crid_proto::containerd::services::v1::images_client::ImagesClient;
use crid_proto::containerd::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use crid_proto::containerd::types::Descriptor;
use std::collections::HashMap;
use std::sync::Arc;

/// Label marking image records crid created.
pub const MANAGED_LABEL: &str = "io.crid.image";

/// An image's metadata for the node's platform.
#[derive(Debug, Clone)]
pub struct ImageMeta {
    /// Image id: the config digest.
    pub id: String,
    /// Bytes of index, manifest, config and layers (compressed).
    pub size: u64,
    /// The config blob as stored.
    pub config_raw: Vec<u8>,
    /// The config's `User`.
    pub user: Option<String>,
    /// Chain ID of the top layer: the snapshot a container's rootfs is prepared from.
    pub chain_id: Option<String>,
    /// Digest of the platform's manifest (the target itself unless it is an index).
    pub manifest: String,
}

/// One image id with all names pointing at it.
#[derive(Debug, Clone)]
pub struct ImageGroup {
    /// Metadata.
    pub meta: Arc<ImageMeta>,
    /// Record names, sorted.
    pub names: Vec<String>,
    /// A record of the image carries containerd's CRI "pinned" label
    /// (never garbage-collected by the kubelet).
    pub pinned: bool,
}

impl ImageGroup {
    /// Names with a tag (`repo:tag`).
    pub fn repo_tags(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !n.contains('@') && !is_digest(n))
            .cloned()
            .collect()
    }

    /// Names with a digest (`repo@sha256:…`).
    pub fn repo_digests(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| n.contains('@'))
            .cloned()
            .collect()
    }
}

/// The image store client.
pub struct ImageStore {
    ctrd: Containerd,
}

impl ImageStore {
    /// A store on `ctrd`.
    pub fn new(ctrd: Containerd) -> ImageStore {
        ImageStore { ctrd }
    }

    fn session(&self) -> Session {
        Session::plain(&self.ctrd)
    }

    /// Every image record of crid's namespace.
    pub async fn records(&self) -> Result<Vec<Image>, Error> {
        let s = self.session();
        Ok(ImagesClient::new(s.ctrd.channel())
            .list(s.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(cerr("images.list"))?
            .into_inner()
            .images)
    }

    /// The record named `name`, if any.
    pub async fn record(&self, name: &str) -> Result<Option<Image>, Error> {
        let s = self.session();
        let r = ImagesClient::new(s.ctrd.channel())
            .get(s.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        match r {
            Ok(resp) => Ok(resp.into_inner().image),
            Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
            Err(st) => Err(cerr("images.get")(st)),
        }
    }

    /// Creates or updates the record `name` → `target`.
    pub async fn put(&self, s: &Session, name: &str, target: Descriptor) -> Result<(), Error> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::from([(MANAGED_LABEL.to_string(), "managed".to_string())]),
            target: Some(target),
            ..Default::default()
        };
        let mut client = ImagesClient::new(s.ctrd.channel());
        let created = client
            .create(s.req(CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(st) if st.code() == tonic::Code::AlreadyExists => {
                client
                    .update(s.req(UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    }))
                    .await
                    .map_err(cerr("images.update"))?;
                Ok(())
            }
            Err(st) => Err(cerr("images.create")(st)),
        }
    }

    /// Deletes the record `name`; `sync` waits for containerd's garbage collection.
    pub async fn delete(&self, name: &str, sync: bool) -> Result<(), Error> {
        let s = self.session();
        let r = ImagesClient::new(s.ctrd.channel())
            .delete(s.req(DeleteImageRequest {
                name: name.to_string(),
                sync,
                ..Default::default()
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
            Err(st) => Err(cerr("images.delete")(st)),
        }
    }

    /// Metadata of the image a record targets, read from the content store
    /// (target, platform manifest, config). Not cached here: the index
    /// keeps one per target digest.
    #[tracing::instrument(level = "debug", skip_all, fields(target = %target.digest))]
    pub async fn resolve(&self, target: &Descriptor) -> Result<ImageMeta, Error> {
        let s = self.session();
        let mut size = 0u64;
        let mut desc_digest = target.digest.clone();
        let mut desc_size = target.size;
        // An index points at a manifest; a manifest at config and layers.
        for _ in 0..2 {
            let bytes = content::read_small(&s, &desc_digest).await?;
            size += desc_size.max(0) as u64;
            match manifest::parse(&bytes, &desc_digest)? {
                Parsed::Index { manifests, .. } => {
                    let chosen = manifest::choose(&manifests, manifest::host_platform())
                        .ok_or_else(|| {
                            Error::NotFound(format!(
                                "index {desc_digest} has no manifest for this platform"
                            ))
                        })?;
                    desc_digest = chosen.digest.clone();
                    desc_size = chosen.size;
                }
                Parsed::Manifest { config, layers, .. } => {
                    let config_raw = content::read_small(&s, &config.digest).await?;
                    let layers: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
                    return ImageMeta::new(
                        desc_digest,
                        &config.digest,
                        config_raw,
                        size + config.size.max(0) as u64 + layers,
                    );
                }
            }
        }
        Err(Error::Internal(format!(
            "image {}: nested indexes are not supported",
            target.digest
        )))
    }
}

impl ImageMeta {
    /// Metadata from a platform manifest's digest, the config (digest and
    /// bytes) and the image's total size (index, manifest, config, layers).
    pub fn new(
        manifest: String,
        config_digest: &str,
        config_raw: Vec<u8>,
        size: u64,
    ) -> Result<ImageMeta, Error> {
        let cfg = manifest::parse_config(&config_raw, config_digest)?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        Ok(ImageMeta {
            id: config_digest.to_string(),
            size,
            user: cfg.config.and_then(|c| c.user).filter(|u| !u.is_empty()),
            chain_id: chain_ids(&diff_ids).pop(),
            config_raw,
            manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_split() {
        let g = ImageGroup {
            meta: Arc::new(ImageMeta {
                id: "sha256:x".into(),
                size: 0,
                config_raw: vec![],
                user: None,
                chain_id: None,
                manifest: String::new(),
            }),
            pinned: false,
            names: vec![
                "docker.io/library/a:1".into(),
                "docker.io/library/a@sha256:0123".into(),
                "r:5000/b:t".into(),
            ],
        };
        assert_eq!(g.repo_tags(), vec!["docker.io/library/a:1", "r:5000/b:t"]);
        assert_eq!(g.repo_digests(), vec!["docker.io/library/a@sha256:0123"]);
    }
}
