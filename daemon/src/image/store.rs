//! containerd's image store as the CRI sees it: records (names → target
//! descriptor) grouped by image id (the config digest), each image's
//! metadata resolved from the content store for the node's platform and
//! cached by target digest (content is immutable).

use super::content;
use super::manifest::{self, Parsed};
use super::reference::{is_bare_hex_id, is_digest, ImageRef};
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
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
}

/// One image id with all names pointing at it.
#[derive(Debug, Clone)]
pub struct ImageGroup {
    /// Metadata.
    pub meta: Arc<ImageMeta>,
    /// Record names, sorted.
    pub names: Vec<String>,
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

/// The image store client with its metadata cache.
pub struct ImageStore {
    ctrd: Containerd,
    cache: Mutex<HashMap<String, Arc<ImageMeta>>>,
}

impl ImageStore {
    /// A store on `ctrd`.
    pub fn new(ctrd: Containerd) -> ImageStore {
        ImageStore {
            ctrd,
            cache: Mutex::new(HashMap::new()),
        }
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

    /// Metadata of the image a record targets (cached).
    pub async fn meta(&self, target: &Descriptor) -> Result<Arc<ImageMeta>, Error> {
        let s = self.session();
        if let Some(m) = self.cache_get(&target.digest) {
            // Content is immutable but can be deleted behind crid's back:
            // one cheap check that the config is still there.
            if content::info(&s, &m.id).await?.is_some() {
                return Ok(m);
            }
            if let Ok(mut c) = self.cache.lock() {
                c.remove(&target.digest);
            }
            return Err(Error::NotFound(format!(
                "image {}: config {} is gone from the content store",
                target.digest, m.id
            )));
        }
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
                    let cfg = manifest::parse_config(&config_raw, &config.digest)?;
                    size += config.size.max(0) as u64;
                    size += layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
                    let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
                    let meta = Arc::new(ImageMeta {
                        id: config.digest.clone(),
                        size,
                        user: cfg.config.and_then(|c| c.user).filter(|u| !u.is_empty()),
                        chain_id: chain_ids(&diff_ids).pop(),
                        config_raw,
                    });
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(target.digest.clone(), meta.clone());
                    }
                    return Ok(meta);
                }
            }
        }
        Err(Error::Internal(format!(
            "image {}: nested indexes are not supported",
            target.digest
        )))
    }

    fn cache_get(&self, digest: &str) -> Option<Arc<ImageMeta>> {
        self.cache.lock().ok()?.get(digest).cloned()
    }

    /// All images, grouped by id. Records whose content is incomplete (e.g. a
    /// foreign half-pulled image) are skipped with a log line.
    pub async fn groups(&self) -> Result<Vec<ImageGroup>, Error> {
        let mut by_id: BTreeMap<String, ImageGroup> = BTreeMap::new();
        for rec in self.records().await? {
            let Some(target) = &rec.target else { continue };
            let meta = match self.meta(target).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(image = %rec.name, error = %e, "skipping image record");
                    continue;
                }
            };
            let g = by_id.entry(meta.id.clone()).or_insert_with(|| ImageGroup {
                meta: meta.clone(),
                names: vec![],
            });
            // containerd's CRI plugin keeps a record named by the id itself; it is not a name.
            if rec.name != meta.id {
                g.names.push(rec.name.clone());
            }
        }
        Ok(by_id
            .into_values()
            .map(|mut g| {
                g.names.sort();
                g
            })
            .collect())
    }

    /// The image a CRI image reference names: an id (`sha256:…` or bare hex),
    /// or a name (normalised). None if there is no such image.
    pub async fn find(&self, reference: &str) -> Result<Option<ImageGroup>, Error> {
        let id = if is_digest(reference) {
            Some(reference.to_string())
        } else if is_bare_hex_id(reference) {
            Some(format!("sha256:{reference}"))
        } else {
            None
        };
        if let Some(id) = id {
            return Ok(self.groups().await?.into_iter().find(|g| g.meta.id == id));
        }
        let name = ImageRef::parse(reference)?.name();
        let Some(rec) = self.record(&name).await? else {
            return Ok(None);
        };
        let Some(target) = rec.target else {
            return Ok(None);
        };
        // A record whose content is incomplete (e.g. GC'd under a foreign
        // record) is no usable image: report it absent so the kubelet pulls.
        let meta = match self.meta(&target).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(image = %name, error = %e, "image record without complete content");
                return Ok(None);
            }
        };
        Ok(self
            .groups()
            .await?
            .into_iter()
            .find(|g| g.meta.id == meta.id))
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
            }),
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
