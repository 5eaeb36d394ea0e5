//! One pull, as containerd's own client does it: resolve the reference,
//! choose the node's platform, fetch layers in parallel (bounded) into the
//! content store under a lease while unpacking them in order into committed
//! chain-ID snapshots, then write config, manifest and index with their GC
//! reference labels, and finally the image records. Blobs and snapshots
//! already present are neither fetched nor unpacked again.

use super::content;
use super::hosts::hosts_for;
use super::index::ImageIndex;
use super::manifest::{self, Parsed};
use super::progress::Progress;
use super::reference::ImageRef;
use super::registry::{ClientCache, Credentials, Registry};
use super::session::Session;
use super::store::{ImageMeta, ImageStore};
use super::unpack::{chain_ids, snapshot_exists, unpack_layer};
use crate::containerd::Containerd;
use crate::error::Error;
use crid_common::config::RegistryConfig;
use crid_proto::containerd::types::Descriptor;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// What one pull needs from crid.
pub struct PullContext {
    /// containerd.
    pub ctrd: Containerd,
    /// Image records.
    pub store: Arc<ImageStore>,
    /// The in-memory index, updated before the pull answers.
    pub index: Arc<ImageIndex>,
    /// Registry settings.
    pub registry: RegistryConfig,
    /// Snapshotter to unpack into.
    pub snapshotter: String,
    /// Registry clients kept across pulls.
    pub clients: ClientCache,
}

fn desc(d: &manifest::Desc, media_type_default: &str) -> Descriptor {
    Descriptor {
        media_type: if d.media_type.is_empty() {
            media_type_default.to_string()
        } else {
            d.media_type.clone()
        },
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The lease of pulls of `name`. A failed pull deletes it too, as
/// containerd's CRI plugin does: what it fetched is left to containerd's GC
/// rather than held for a day (a crid killed mid-pull leaves it to expire).
fn lease_id(name: &str) -> String {
    format!("crid-pull-{}", &sha256(name.as_bytes())[7..23])
}

/// Writes a blob held in memory, or, if containerd has it, holds it in the
/// pull's lease and labels it. Written straight away: a new blob (the
/// common case) costs one call, no lookup first.
async fn put_small(
    s: &Session,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), Error> {
    let digest = sha256(bytes);
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
        bytes::Bytes::copy_from_slice(bytes),
    )]);
    if content::write(
        s,
        &digest,
        bytes.len() as i64,
        labels.clone(),
        body,
        &|_| {},
    )
    .await?
    {
        return Ok(());
    }
    s.hold("content", &digest).await?;
    content::set_labels(s, &digest, &labels).await
}

/// What the verified image config tells the layer tasks: each layer's
/// uncompressed digest and chain ID.
struct LayerIds {
    diff_ids: Vec<String>,
    chains: Vec<String>,
}

/// Published by the config task once the config is verified; None until then.
type IdsRx = tokio::sync::watch::Receiver<Option<Arc<LayerIds>>>;

/// Waits for the config task's layer ids. Fails if the config task failed
/// (its own error is what the pull reports).
async fn layer_ids(rx: &IdsRx) -> Result<Arc<LayerIds>, Error> {
    let mut rx = rx.clone();
    let got = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| Error::Internal("image config unavailable".into()))?;
    (*got)
        .clone()
        .ok_or_else(|| Error::Internal("image config unavailable".into()))
}

/// Fetches layer `i` into the content store unless it is there; labels it
/// with its uncompressed digest as containerd's unpacker does. The fetch
/// starts before the config is in: only the commit waits for the label.
async fn ensure_layer(
    s: &Session,
    reg: &Registry,
    layer: &Descriptor,
    i: usize,
    ids: &IdsRx,
    progress: &Progress,
) -> Result<(), Error> {
    let labels = |ids: &LayerIds| -> Result<HashMap<String, String>, Error> {
        let diff_id = ids
            .diff_ids
            .get(i)
            .ok_or_else(|| Error::Internal(format!("no diff id for layer {i}")))?;
        Ok(HashMap::from([(
            "containerd.io/uncompressed".to_string(),
            diff_id.clone(),
        )]))
    };
    if content::info(s, &layer.digest).await?.is_none() {
        let body = reg.blob(&layer.digest).await?;
        progress.mark(0);
        let labels = labels(&*layer_ids(ids).await?)?;
        if content::write(s, &layer.digest, layer.size, labels.clone(), body, &|n| {
            progress.mark(n)
        })
        .await?
        {
            return Ok(());
        }
        // Another pull committed it meanwhile: hold it like a found one.
        s.hold("content", &layer.digest).await?;
        return content::set_labels(s, &layer.digest, &labels).await;
    }
    let labels = labels(&*layer_ids(ids).await?)?;
    content::set_labels(s, &layer.digest, &labels).await
}

/// The config blob: from containerd if it has it, else from the registry;
/// verified against its digest either way.
async fn fetch_config(
    s: &Session,
    reg: &Registry,
    image: &ImageRef,
    digest: &str,
    progress: &Progress,
) -> Result<Vec<u8>, Error> {
    let bytes = match content::info(s, digest).await? {
        Some(_) => content::read_small(s, digest).await?,
        None => {
            let mut body = reg.blob(digest).await?;
            let mut buf = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Internal(format!("fetching config: {e}")))?;
                progress.mark(chunk.len());
                buf.extend_from_slice(&chunk);
                if buf.len() as i64 > content::MAX_SMALL_BLOB {
                    return Err(Error::Internal("image config too large".into()));
                }
            }
            buf
        }
    };
    if sha256(&bytes) != digest {
        return Err(Error::Internal(format!(
            "{}: config blob does not match its digest {digest}",
            image.name(),
        )));
    }
    Ok(bytes)
}

/// Unpacks the layers in order, each as soon as its download is reported
/// on `done`. Chains already committed (looked up together while the
/// layers download) are not unpacked again.
async fn unpack_all(
    s: &Session,
    snapshotter: &str,
    layers: &[Descriptor],
    ids: &IdsRx,
    done: &mut tokio::sync::mpsc::UnboundedReceiver<usize>,
    progress: &Progress,
) -> Result<(), Error> {
    let ids = layer_ids(ids).await?;
    let present = futures_util::future::try_join_all(
        ids.chains
            .iter()
            .map(|c| snapshot_exists(s, snapshotter, c)),
    )
    .await?;
    // A committed chain's parents are committed too: unpack from the first gap.
    let first_missing = present.iter().position(|p| !p).unwrap_or(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        match done.recv().await {
            Some(got) if got == i => {}
            _ => return Err(Error::Internal("layer download ended early".into())),
        }
        if i < first_missing {
            continue;
        }
        let parent = if i == 0 {
            ""
        } else {
            ids.chains[i - 1].as_str()
        };
        let work = unpack_layer(
            s,
            snapshotter,
            layer,
            &ids.diff_ids[i],
            parent,
            &ids.chains[i],
        );
        tokio::pin!(work);
        // containerd applying a big layer is progress too: without this a
        // large last layer could outlast the timeout with no bytes arriving.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut work => {
                    r?;
                    break;
                }
                _ = tick.tick() => progress.mark(0),
            }
        }
        progress.mark(0);
    }
    Ok(())
}

/// Pulls `image` and returns its id (the config digest).
pub async fn pull(
    cx: &PullContext,
    image: &ImageRef,
    auth: Credentials,
    server_address: &str,
    progress: &Progress,
) -> Result<String, Error> {
    let mut phases = crate::timing::Phases::new();
    let hosts = hosts_for(&cx.registry.config_path, &image.registry)?;
    let reg = Registry::new(
        image,
        hosts,
        auth,
        server_address,
        cx.registry.max_concurrent_downloads,
        &cx.clients,
    )?;
    phases.mark("setup");
    // The lease is taken while the reference resolves: neither needs the
    // other, and nothing is written before both are done.
    let (resolved, leased) = tokio::join!(
        reg.resolve(),
        Session::leased(&cx.ctrd, lease_id(&image.name()))
    );
    let (top_bytes, top_digest) = match resolved {
        Ok(r) => r,
        Err(e) => {
            if let Ok(s) = leased {
                s.release().await;
            }
            return Err(e);
        }
    };
    let s = leased?;
    progress.mark(0);
    phases.mark("resolve_lease");
    let result = pull_under_lease(
        cx,
        image,
        &reg,
        &s,
        top_bytes,
        top_digest,
        progress,
        &mut phases,
    )
    .await;
    s.release().await;
    phases.mark("release");
    let id = result?;
    tracing::debug!(image = %image.name(), phases = %phases.summary(), "PullImage timings");
    tracing::info!(image = %image.name(), id = %id, bytes = progress.bytes(), "pulled image");
    Ok(id)
}

/// The part of [`pull`] that writes content and records under the lease `s`.
#[allow(clippy::too_many_arguments)]
async fn pull_under_lease(
    cx: &PullContext,
    image: &ImageRef,
    reg: &Registry,
    s: &Session,
    top_bytes: Vec<u8>,
    top_digest: String,
    progress: &Progress,
    phases: &mut crate::timing::Phases,
) -> Result<String, Error> {
    if let Some(want) = &image.digest {
        if &sha256(&top_bytes) != want {
            return Err(Error::Internal(format!(
                "{}: registry sent a manifest that does not match the digest",
                image.name()
            )));
        }
    }
    let top = manifest::parse(&top_bytes, &top_digest)?;
    let (top_media_type, index, manifest_bytes) = match &top {
        Parsed::Index {
            media_type,
            manifests,
        } => {
            let platform = manifest::host_platform();
            let (pos, chosen) = manifests
                .iter()
                .enumerate()
                .find(|(_, d)| Some(*d) == manifest::choose(manifests, platform))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{}: no manifest for platform {}/{}",
                        image.name(),
                        platform.0,
                        platform.1
                    ))
                })?;
            let bytes = reg.manifest(&chosen.digest).await?;
            progress.mark(0);
            (media_type.clone(), Some((pos, chosen.clone())), bytes)
        }
        Parsed::Manifest { media_type, .. } => (media_type.clone(), None, top_bytes.clone()),
    };
    let manifest_digest = sha256(&manifest_bytes);
    let Parsed::Manifest { config, layers, .. } =
        manifest::parse(&manifest_bytes, &manifest_digest)?
    else {
        return Err(Error::Internal(format!(
            "{}: an index entry points at another index",
            image.name()
        )));
    };
    phases.mark("manifest");
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| desc(l, "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();

    // Three tasks at once, as containerd's client fetches children
    // concurrently: the config (then the GC-labelled config, manifest and
    // index blobs), the layer downloads (bounded), and the in-order unpack.
    // Layer commits and unpacks wait for the config's diff ids.
    let (ids_tx, ids_rx) = tokio::sync::watch::channel::<Option<Arc<LayerIds>>>(None);
    let config_task = async {
        let ids_tx = ids_tx;
        let config_bytes = fetch_config(s, reg, image, &config.digest, progress).await?;
        let cfg = manifest::parse_config(&config_bytes, &config.digest)?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(Error::Internal(format!(
                "{}: manifest has {} layers but config lists {} diff ids",
                image.name(),
                layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let top_chain = chains.last().cloned();
        let _ = ids_tx.send(Some(Arc::new(LayerIds { diff_ids, chains })));
        // Config, manifest and index, each labelled with what it keeps
        // alive. Written while the layers come in: the pull's lease keeps
        // everything until the image record references it.
        let mut config_labels = HashMap::new();
        if let Some(top_chain) = top_chain {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{}", cx.snapshotter),
                top_chain,
            );
        }
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        let index_blob = async {
            match &index {
                Some((pos, chosen)) => {
                    let labels = HashMap::from([(
                        format!("containerd.io/gc.ref.content.m.{pos}"),
                        chosen.digest.clone(),
                    )]);
                    put_small(s, &top_bytes, labels).await
                }
                None => Ok(()),
            }
        };
        tokio::try_join!(
            put_small(s, &config_bytes, config_labels),
            put_small(s, &manifest_bytes, manifest_labels),
            index_blob
        )?;
        Ok::<Vec<u8>, Error>(config_bytes)
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let downloads = async {
        // Futures built up front: a lazily mapping stream adapter held across
        // awaits trips rustc's higher-ranked Send check in tokio::spawn.
        let mut jobs = Vec::with_capacity(layer_descs.len());
        for (i, l) in layer_descs.iter().enumerate() {
            let ids = &ids_rx;
            jobs.push(async move { ensure_layer(s, reg, l, i, ids, progress).await.map(|_| i) });
        }
        let mut fetches =
            futures_util::stream::iter(jobs).buffered(cx.registry.max_concurrent_downloads);
        while let Some(r) = fetches.next().await {
            let _ = done_tx.send(r?);
        }
        Ok::<(), Error>(())
    };
    let unpacks = unpack_all(
        s,
        &cx.snapshotter,
        &layer_descs,
        &ids_rx,
        &mut done_rx,
        progress,
    );
    let (config_bytes, (), ()) = tokio::try_join!(config_task, downloads, unpacks)?;
    phases.mark("fetch_unpack");

    let target = Descriptor {
        media_type: top_media_type,
        digest: sha256(&top_bytes),
        size: top_bytes.len() as i64,
        ..Default::default()
    };
    let name = image.name();
    let digest_name = image.digest_name(&target.digest);
    if digest_name != name {
        tokio::try_join!(
            cx.store.put(s, &name, target.clone()),
            cx.store.put(s, &digest_name, target.clone())
        )?;
    } else {
        cx.store.put(s, &name, target.clone()).await?;
    }
    // The index learns the image from what the pull has in hand (no
    // content reads); containerd's events for the records follow.
    let mut size = top_bytes.len() as u64 + config.size.max(0) as u64;
    if index.is_some() {
        size += manifest_bytes.len() as u64;
    }
    size += layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
    let meta = Arc::new(ImageMeta::new(
        manifest_digest,
        &config.digest,
        config_bytes,
        size,
    )?);
    cx.index.put(&name, &target.digest, Arc::clone(&meta))?;
    cx.index.put(&digest_name, &target.digest, meta)?;
    phases.mark("records");
    Ok(config.digest)
}
