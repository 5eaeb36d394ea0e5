//! CRI translation of the image RPCs: PullImage, ListImages, ImageStatus,
//! RemoveImage, ImageFsInfo. Validates, calls the image domain, shapes the
//! answer the way the kubelet expects (image id = config digest).

use super::Crid;
use crate::error::{Error, Result};
use crate::image::fsinfo;
use crate::image::reference::ImageRef;
use crate::image::store::ImageGroup;
use crid_proto::cri;

fn span_image(name: &str) {
    tracing::Span::current().record("image", name);
}

fn to_cri(g: &ImageGroup) -> cri::Image {
    let (uid, username) = match &g.meta.user {
        Some(u) => crate::image::manifest::user_of(u),
        None => (None, String::new()),
    };
    cri::Image {
        id: g.meta.id.clone(),
        repo_tags: g.repo_tags(),
        repo_digests: g.repo_digests(),
        size: g.meta.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: g.meta.id.clone(),
            ..Default::default()
        }),
        pinned: g.pinned,
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Error::InvalidArgument(
            "image spec with an image reference is required".into(),
        )),
    }
}

/// PullImage: the response's image_ref is the image id.
pub async fn pull(crid: &Crid, req: cri::PullImageRequest) -> Result<cri::PullImageResponse> {
    let name = image_name(req.image.as_ref())?;
    span_image(name);
    let image = ImageRef::parse(name)?;
    let id = crid.images.pull(&image, req.auth.as_ref()).await?;
    Ok(cri::PullImageResponse { image_ref: id })
}

/// ListImages, optionally filtered by one image reference.
pub async fn list(crid: &Crid, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.is_empty());
    let groups = match wanted {
        Some(r) => crid.images.index().find(&r).await?.into_iter().collect(),
        None => crid.images.index().groups().await?,
    };
    Ok(cri::ListImagesResponse {
        images: groups.iter().map(to_cri).collect(),
    })
}

/// ImageStatus: an absent image is an empty answer, not an error.
pub async fn status(crid: &Crid, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse> {
    let name = image_name(req.image.as_ref())?;
    span_image(name);
    let Some(g) = crid.images.index().find(name).await? else {
        return Ok(cri::ImageStatusResponse::default());
    };
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let config: serde_json::Value =
            serde_json::from_slice(&g.meta.config_raw).unwrap_or(serde_json::Value::Null);
        let v = serde_json::json!({
            "imageSpec": config,
            "chainID": g.meta.chain_id,
            "snapshotter": crid.images.snapshotter(),
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(cri::ImageStatusResponse {
        image: Some(to_cri(&g)),
        info,
    })
}

/// RemoveImage by id, tag or digest: removes every name of the image
/// (including a record named by the id), the last one synchronously so that
/// containerd's garbage collector has released content and snapshots no
/// longer referenced when the call returns, as containerd's CRI plugin
/// does. Removing an absent image succeeds.
pub async fn remove(crid: &Crid, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse> {
    let name = image_name(req.image.as_ref())?;
    span_image(name);
    let (store, index) = (crid.images.store(), crid.images.index());
    let Some(g) = index.find(name).await? else {
        // Not a usable image, but a record of that name may still exist
        // (incomplete content): remove it too.
        if let Ok(r) = ImageRef::parse(name) {
            let n = r.name();
            store.delete(&n, true).await?;
            index.forget(&n)?;
        }
        return Ok(cri::RemoveImageResponse {});
    };
    let names = index.names_of(&g.meta.id).await?;
    let last = names.len().saturating_sub(1);
    for (i, n) in names.iter().enumerate() {
        store.delete(n, i == last).await?;
        index.forget(n)?;
    }
    tracing::info!(image = %g.meta.id, names = ?names, "removed image");
    Ok(cri::RemoveImageResponse {})
}

/// ImageFsInfo: the snapshotter's filesystem, for images and writable layers alike.
pub async fn fs_info(
    crid: &Crid,
    _req: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse> {
    let root =
        fsinfo::snapshotter_root(crid.images.containerd(), crid.images.snapshotter()).await?;
    let u = tokio::task::spawn_blocking(move || fsinfo::usage(root))
        .await
        .map_err(|e| Error::Internal(format!("statvfs task: {e}")))??;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    let usage = cri::FilesystemUsage {
        timestamp,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: u.used_bytes,
        }),
        inodes_used: Some(cri::UInt64Value {
            value: u.inodes_used,
        }),
    };
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![usage.clone()],
        container_filesystems: vec![usage],
    })
}
