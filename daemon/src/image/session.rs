//! One pull's view of containerd: every request carries crid's namespace and,
//! while the pull runs, the pull's lease (`containerd-lease` header), so that
//! containerd's garbage collector cannot remove blobs and snapshots before the
//! image record references them. The lease expires on its own after a day,
//! so a crid killed mid-pull leaks nothing for good.

use crate::containerd::Containerd;
use crate::error::{ContainerdError, Error};
use crid_proto::containerd::services::v1::leases_client::LeasesClient;
use crid_proto::containerd::services::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, Resource,
};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Header containerd reads the lease from.
const LEASE_HEADER: &str = "containerd-lease";
/// A pull's lease is collected by containerd after this long even if crid never deletes it.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Maps a failed containerd call to crid's error, naming the operation.
pub fn cerr(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Containerd(ContainerdError { op, status })
}

/// A unique suffix for refs, keys and lease ids.
pub fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// containerd calls on behalf of one pull (or of an RPC without a lease).
#[derive(Clone)]
pub struct Session {
    /// The adapter.
    pub ctrd: Containerd,
    lease: Option<String>,
}

impl Session {
    /// Calls without a lease (listing, status, removal).
    pub fn plain(ctrd: &Containerd) -> Session {
        Session {
            ctrd: ctrd.clone(),
            lease: None,
        }
    }

    /// Creates the lease `id` (or re-opens it if it exists) and returns a
    /// session whose calls carry it.
    pub async fn leased(ctrd: &Containerd, id: String) -> Result<Session, Error> {
        let expire = humantime::format_rfc3339_seconds(SystemTime::now() + LEASE_EXPIRY);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire.to_string())]);
        let r = LeasesClient::new(ctrd.channel())
            .create(ctrd.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await;
        match r {
            Ok(_) => {}
            Err(st) if st.code() == tonic::Code::AlreadyExists => {}
            Err(st) => return Err(cerr("leases.create")(st)),
        }
        Ok(Session {
            ctrd: ctrd.clone(),
            lease: Some(id),
        })
    }

    /// True if calls carry a pull's lease.
    pub fn is_leased(&self) -> bool {
        self.lease.is_some()
    }

    /// Wraps `msg` with namespace and lease headers.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = self.ctrd.request(msg);
        if let Some(v) = self.lease.as_deref().and_then(|l| l.parse().ok()) {
            r.metadata_mut().insert(LEASE_HEADER, v);
        }
        r
    }

    /// Adds an existing object (`kind` = `content` or `snapshots/<snapshotter>`)
    /// to the pull's lease before the pull relies on it: a blob or layer
    /// that an earlier, failed pull left unreferenced may otherwise be
    /// collected between our lookup and its use. No-op without a lease.
    pub async fn hold(&self, kind: &str, id: &str) -> Result<(), Error> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        LeasesClient::new(self.ctrd.channel())
            .add_resource(self.ctrd.request(AddResourceRequest {
                id: lease.clone(),
                resource: Some(Resource {
                    id: id.to_string(),
                    r#type: kind.to_string(),
                }),
            }))
            .await
            .map_err(cerr("leases.add_resource"))?;
        Ok(())
    }

    /// Deletes the lease: what the image record references stays, the rest
    /// becomes garbage for containerd's collector.
    pub async fn release(&self) {
        let Some(id) = &self.lease else { return };
        let res = LeasesClient::new(self.ctrd.channel())
            .delete(self.ctrd.request(DeleteRequest {
                id: id.clone(),
                sync: false,
            }))
            .await;
        if let Err(e) = res {
            tracing::warn!(lease = %id, error = %e, "could not delete pull lease; it expires by itself");
        }
    }
}
