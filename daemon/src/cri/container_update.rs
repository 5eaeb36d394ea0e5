//! UpdateContainerResources, and the PID namespace of a TARGET container for
//! CreateContainer: CRI translation around `container::update` and
//! `container::task`.
//!
//! UpdateContainerResources, as containerd's CRI plugin does it: read the
//! container's spec from containerd (the source of truth), merge the request
//! into its resources, store the new spec in containerd (so a container not
//! started yet, or a restarted task, runs with it), then, if the container is
//! running, apply the merged resources to the task (Tasks.Update -> runc
//! update); on failure the old spec is put back. The record's copy of the
//! spec is updated last; ContainerStatus reports `resources` from it.
//! The whole update holds the container's op lock, so it is serialised with
//! StartContainer, exit handling, RemoveContainer and other updates.

use super::Crid;
use crate::container::record::ContainerState;
use crate::container::task::{self, TaskState};
use crate::container::{spec_ctrd, update};
use crate::error::{Error, Result};
use crate::image::session::Session;
use crid_proto::cri;
use std::path::PathBuf;

/// `UpdateContainerResources`.
pub async fn update_resources(
    crid: &Crid,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse> {
    let rec = crid
        .containers
        .get(&req.container_id)?
        .ok_or_else(|| Error::NotFound(format!("container {} not found", req.container_id)))?;
    let span = tracing::Span::current();
    span.record("container", rec.id.as_str());
    span.record("pod", rec.sandbox_id.as_str());
    let Some(mut linux) = req.linux else {
        // Nothing for Linux to change (containerd: a no-op).
        return Ok(cri::UpdateContainerResourcesResponse {});
    };
    update::validate(&linux)?;
    if !crid.nri.enabled() {
        apply(crid, &rec.id, &linux).await?;
        return Ok(cri::UpdateContainerResourcesResponse {});
    }
    // NRI plugins see the request first and may change it (an update of
    // this container) or ask for updates and evictions of others.
    let sb = super::container::sandbox_of(crid, &rec.sandbox_id).await?;
    let (updates, evictions) = crid
        .nri
        .update_container(
            &sb,
            crate::nri::convert::container_of_record(&rec),
            crate::nri::convert::from_cri(&linux),
        )
        .await?;
    let mut others = Vec::new();
    for u in updates {
        match u.linux.as_ref().and_then(|l| l.resources.as_ref()) {
            Some(r) if u.container_id == rec.id => {
                linux = crate::nri::convert::merge_into_cri(&linux, r);
            }
            _ => others.push(u),
        }
    }
    update::validate(&linux)?;
    apply(crid, &rec.id, &linux).await?;
    crate::nri::apply_updates(crid, others, evictions).await;
    if let Some(rec) = crid.containers.get(&rec.id)? {
        crid.nri
            .container_event(
                crid_proto::nri::Event::PostUpdateContainer,
                &sb,
                crate::nri::convert::container_of_record(&rec),
            )
            .await;
    }
    Ok(cri::UpdateContainerResourcesResponse {})
}

/// Applies resources an NRI plugin asked for to container `id`.
pub async fn apply_nri_resources(
    crid: &Crid,
    id: &str,
    r: &crid_proto::nri::LinuxResources,
) -> Result<()> {
    let linux = crate::nri::convert::merge_into_cri(&Default::default(), r);
    update::validate(&linux)?;
    apply(crid, id, &linux).await
}

/// Merges `linux` into container `id`'s spec in containerd and, if it is
/// running, into its task (module doc).
async fn apply(crid: &Crid, id: &str, linux: &cri::LinuxContainerResources) -> Result<()> {
    let rec = crid
        .containers
        .get(id)?
        .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
    let lock = crid.containers.op_lock(&rec.id);
    let _held = lock.lock().await;
    let s = Session::plain(&crid.containerd);
    let old_any = spec_ctrd::container_spec(&s, &rec.id)
        .await?
        .ok_or_else(|| {
            Error::Internal(format!("container {} has no spec in containerd", rec.id))
        })?;
    let old: oci_spec::runtime::Spec = serde_json::from_slice(&old_any.value).map_err(|e| {
        Error::Internal(format!("container {} has an unreadable spec: {e}", rec.id))
    })?;
    let new = update::merge_into_spec(&old, linux, &crid.containers.host)?;
    spec_ctrd::update_container_spec(&s, &rec.id, crate::spec::to_containerd_any(&new)?).await?;

    // A container that is not running only needs the spec (applied at
    // start). The state is read under the op lock, so it cannot change now.
    let live = crid
        .containers
        .get(&rec.id)?
        .is_some_and(|r| r.state == ContainerState::Running);
    if live {
        let applied = spec_ctrd::update_task(&s, &rec.id, update::resources_any(&new)?).await;
        match applied {
            Ok(true) => {}
            Ok(false) => tracing::info!("task gone while updating resources: spec updated only"),
            Err(e) => {
                if let Err(undo) = spec_ctrd::update_container_spec(&s, &rec.id, old_any).await {
                    tracing::error!(error = %undo, "putting the old spec back after a failed update");
                }
                return Err(e);
            }
        }
    }
    let value = serde_json::to_value(&new)
        .map_err(|e| Error::Internal(format!("encoding the spec: {e}")))?;
    crid.containers.update(&rec.id, |r| r.spec = value)?;
    Ok(())
}

/// ContainerStatus `resources`: what the record's spec holds.
pub fn status_resources(spec: &serde_json::Value) -> Option<cri::ContainerResources> {
    let spec: oci_spec::runtime::Spec = serde_json::from_value(spec.clone()).ok()?;
    update::status_resources(&spec)
}

/// For PID namespace mode TARGET: the host path of the target container's
/// PID namespace (`/proc/<task pid>/ns/pid`), checked the way containerd's
/// `validateTargetContainer` does: the target must exist (NotFound), belong
/// to the same pod (InvalidArgument) and be running (FailedPrecondition).
/// `None` for any other mode.
pub async fn target_pid_ns(
    crid: &Crid,
    sandbox_id: &str,
    config: &cri::ContainerConfig,
) -> Result<Option<PathBuf>> {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    if opts.pid != cri::NamespaceMode::Target as i32 {
        return Ok(None);
    }
    if opts.target_id.is_empty() {
        return Err(Error::InvalidArgument(
            "PID namespace mode TARGET without a target_id".into(),
        ));
    }
    let target = crid
        .containers
        .get(&opts.target_id)?
        .ok_or_else(|| Error::NotFound(format!("target container {} not found", opts.target_id)))?;
    if target.sandbox_id != sandbox_id {
        return Err(Error::InvalidArgument(format!(
            "target container {} does not belong to pod sandbox {sandbox_id}",
            target.id
        )));
    }
    let not_running =
        || Error::FailedPrecondition(format!("target container {} is not running", target.id));
    if target.state != ContainerState::Running {
        return Err(not_running());
    }
    let pid = match task::state(&Session::plain(&crid.containerd), &target.id).await? {
        TaskState::Alive { pid } if pid > 0 => pid,
        _ => return Err(not_running()),
    };
    let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    // The process may have exited between the two reads.
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(not_running());
    }
    Ok(Some(path))
}
