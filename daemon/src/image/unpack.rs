//! Unpacking layers into the snapshotter the way containerd's own client
//! does: for each layer, Prepare an active snapshot on the parent chain,
//! Diff.Apply the compressed layer onto its mounts (containerd decompresses
//! and checks the uncompressed digest), Commit it under its chain ID.
//! Layers whose chain ID is already committed are not unpacked again (the
//! pull looks all chain IDs up at once, see `pull`).

use super::session::{cerr, unique, Session};
use crate::error::Error;
use crid_proto::containerd::services::v1::diff_client::DiffClient;
use crid_proto::containerd::services::v1::snapshots::snapshots_client::SnapshotsClient;
use crid_proto::containerd::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use crid_proto::containerd::services::v1::ApplyRequest;
use crid_proto::containerd::types::Descriptor;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Label containerd's unpacker puts on layer snapshots.
const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// Chain IDs of a layer stack: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])` (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// True if the snapshotter has `key` (committed or active). In a pull's
/// session a snapshot found is added to the lease and looked up again, so a
/// layer reported here cannot be collected before the next layer is
/// prepared on top of it (a missing one, the common case, costs one call).
pub async fn snapshot_exists(s: &Session, snapshotter: &str, key: &str) -> Result<bool, Error> {
    let found = stat(s, snapshotter, key).await?;
    if !found || !s.is_leased() {
        return Ok(found);
    }
    s.hold(&format!("snapshots/{snapshotter}"), key).await?;
    stat(s, snapshotter, key).await
}

async fn stat(s: &Session, snapshotter: &str, key: &str) -> Result<bool, Error> {
    let r = SnapshotsClient::new(s.ctrd.channel())
        .stat(s.req(StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(false),
        Err(st) => Err(cerr("snapshots.stat")(st)),
    }
}

/// Unpacks one layer on top of `parent` (empty for the base) as `chain_id`.
/// `diff_id` is the uncompressed digest the image config promises. The
/// caller looked up `chain_id` already ([`snapshot_exists`]); if another
/// pull committed it since, the commit finds it and this layer's work is
/// dropped.
pub async fn unpack_layer(
    s: &Session,
    snapshotter: &str,
    layer: &Descriptor,
    diff_id: &str,
    parent: &str,
    chain_id: &str,
) -> Result<(), Error> {
    let mut snaps = SnapshotsClient::new(s.ctrd.channel());
    let key = format!("extract-crid-{} {chain_id}", unique());
    let labels = HashMap::from([(SNAPSHOT_REF_LABEL.to_string(), chain_id.to_string())]);
    let mounts = snaps
        .prepare(s.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: labels.clone(),
        }))
        .await
        .map_err(cerr("snapshots.prepare"))?
        .into_inner()
        .mounts;
    let result = async {
        let applied = DiffClient::new(s.ctrd.channel())
            .apply(s.req(ApplyRequest {
                diff: Some(layer.clone()),
                mounts,
                ..Default::default()
            }))
            .await
            .map_err(cerr("diff.apply"))?
            .into_inner()
            .applied
            .ok_or_else(|| Error::Internal("diff.apply returned no descriptor".into()))?;
        if applied.digest != diff_id {
            return Err(Error::Internal(format!(
                "layer {}: uncompressed digest {} does not match the image config's diff id {diff_id}",
                layer.digest, applied.digest
            )));
        }
        let committed = snaps
            .commit(s.req(CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels,
            }))
            .await;
        match committed {
            Ok(_) => Ok(true),
            // Another pull committed the same layer meanwhile.
            Err(st) if st.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(st) => Err(cerr("snapshots.commit")(st)),
        }
    }
    .await;
    if !matches!(result, Ok(true)) {
        let _ = snaps
            .remove(s.req(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key,
            }))
            .await;
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(c[1], want);
        assert!(chain_ids(&[]).is_empty());
    }
}
