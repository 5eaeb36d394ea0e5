//! crid's containerd calls for containers: the writable snapshot, the
//! containerd container (runtime `io.containerd.runc.v2` with runc options).
//! Deletions treat NotFound as done, so undo and RemoveContainer can repeat.

use crate::error::{Error, Result};
use crate::image::session::{cerr, Session};
use crid_proto::containerd::services::v1::container::Runtime;
use crid_proto::containerd::services::v1::containers_client::ContainersClient;
use crid_proto::containerd::services::v1::snapshots::snapshots_client::SnapshotsClient;
use crid_proto::containerd::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use crid_proto::containerd::services::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest,
};
use crid_proto::containerd::types::Mount;
use std::collections::HashMap;

/// containerd's runc shim runtime.
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// Leaf under the pod's cgroup the pod's one shim is placed in.
pub const SHIM_CGROUP_LEAF: &str = crate::cgroups::SHIM_LEAF;

/// Prepares the container's writable snapshot `key` on the image's top layer
/// `parent` and returns its mounts. The caller's session carries a lease so
/// containerd's GC keeps the snapshot until the container references it.
pub async fn prepare_snapshot(
    s: &Session,
    snapshotter: &str,
    key: &str,
    parent: &str,
) -> Result<Vec<Mount>> {
    Ok(SnapshotsClient::new(s.ctrd.channel())
        .prepare(s.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        }))
        .await
        .map_err(cerr("snapshots.prepare"))?
        .into_inner()
        .mounts)
}

/// Removes snapshot `key`; an absent one is fine.
pub async fn remove_snapshot(s: &Session, snapshotter: &str, key: &str) -> Result<()> {
    let r = SnapshotsClient::new(s.ctrd.channel())
        .remove(s.req(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => Err(cerr("snapshots.remove")(st)),
    }
}

/// What the containerd container is made of.
pub struct NewContainer<'a> {
    /// Container id (= snapshot key).
    pub id: &'a str,
    /// Image name recorded in containerd.
    pub image: &'a str,
    /// The OCI spec as containerd stores it.
    pub spec: prost_types::Any,
    /// containerd runtime name: [`RUNTIME`], or the absolute path of the
    /// `containerd-shim-crid-v1` link for pods whose helper is the shim.
    pub runtime: String,
    /// runc options.
    pub runtime_options: prost_types::Any,
    /// Snapshotter.
    pub snapshotter: &'a str,
    /// containerd labels.
    pub labels: HashMap<String, String>,
}

/// Creates the containerd container. Referencing the snapshot through
/// `snapshotter` + `snapshot_key` is what keeps it from containerd's GC
/// (as containerd's CRI plugin does, no `gc.root` label).
pub async fn create_container(s: &Session, c: NewContainer<'_>) -> Result<()> {
    ContainersClient::new(s.ctrd.channel())
        .create(s.req(CreateContainerRequest {
            container: Some(Container {
                id: c.id.to_string(),
                labels: c.labels,
                image: c.image.to_string(),
                runtime: Some(Runtime {
                    name: c.runtime,
                    options: Some(c.runtime_options),
                }),
                spec: Some(c.spec),
                snapshotter: c.snapshotter.to_string(),
                snapshot_key: c.id.to_string(),
                ..Default::default()
            }),
        }))
        .await
        .map_err(cerr("containers.create"))?;
    Ok(())
}

/// Deletes the containerd container `id`; an absent one is fine.
pub async fn delete_container(s: &Session, id: &str) -> Result<()> {
    let r = ContainersClient::new(s.ctrd.channel())
        .delete(s.req(DeleteContainerRequest { id: id.to_string() }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(()),
        Err(st) => Err(cerr("containers.delete")(st)),
    }
}

/// Removes what a container is made of in containerd: the container first
/// (it references the snapshot), then the snapshot.
pub async fn remove_all(s: &Session, id: &str, snapshotter: &str, key: &str) -> Result<()> {
    delete_container(s, id).await?;
    remove_snapshot(s, snapshotter, key).await
}

/// Every containerd container of crid's namespace as (id, snapshotter,
/// snapshot key).
pub async fn list_containers(s: &Session) -> Result<Vec<(String, String, String)>> {
    Ok(ContainersClient::new(s.ctrd.channel())
        .list(
            s.req(crid_proto::containerd::services::v1::ListContainersRequest { filters: vec![] }),
        )
        .await
        .map_err(cerr("containers.list"))?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| (c.id, c.snapshotter, c.snapshot_key))
        .collect())
}

/// Names of the active (writable) snapshots of `snapshotter`.
pub async fn active_snapshots(s: &Session, snapshotter: &str) -> Result<Vec<String>> {
    use crid_proto::containerd::services::v1::snapshots::{Kind, ListSnapshotsRequest};
    let mut stream = SnapshotsClient::new(s.ctrd.channel())
        .list(s.req(ListSnapshotsRequest {
            snapshotter: snapshotter.to_string(),
            filters: vec![],
        }))
        .await
        .map_err(cerr("snapshots.list"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = stream.message().await.map_err(cerr("snapshots.list"))? {
        out.extend(
            page.info
                .into_iter()
                .filter(|i| i.kind == Kind::Active as i32)
                .map(|i| i.name),
        );
    }
    Ok(out)
}

/// An error for an image that is not (or no longer) usable.
pub fn image_not_found(image: &str) -> Error {
    Error::NotFound(format!("image {image:?} not found: pull it first"))
}
