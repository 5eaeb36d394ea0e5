//! crid's containerd calls for UpdateContainerResources: the container's
//! stored spec (read, replace) and the live update of its task.

use crate::error::Result;
use crate::image::session::{cerr, Session};
use crid_proto::containerd::services::v1::containers_client::ContainersClient;
use crid_proto::containerd::services::v1::tasks_client::TasksClient;
use crid_proto::containerd::services::v1::{
    Container, GetContainerRequest, UpdateContainerRequest, UpdateTaskRequest,
};
use std::collections::HashMap;

/// Applies `resources` (a `LinuxResources` Any) to the running task `id`.
/// `Ok(false)` when the task is gone (exited meanwhile).
pub async fn update_task(s: &Session, id: &str, resources: prost_types::Any) -> Result<bool> {
    let r = TasksClient::new(s.ctrd.channel())
        .update(s.req(UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(resources),
            annotations: HashMap::new(),
        }))
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(false),
        Err(st) => Err(cerr("tasks.update")(st)),
    }
}

/// The OCI spec containerd stores for container `id` (JSON in an Any).
pub async fn container_spec(s: &Session, id: &str) -> Result<Option<prost_types::Any>> {
    Ok(ContainersClient::new(s.ctrd.channel())
        .get(s.req(GetContainerRequest { id: id.to_string() }))
        .await
        .map_err(cerr("containers.get"))?
        .into_inner()
        .container
        .and_then(|c| c.spec))
}

/// Replaces the stored spec of container `id` (only the `spec` field).
pub async fn update_container_spec(s: &Session, id: &str, spec: prost_types::Any) -> Result<()> {
    ContainersClient::new(s.ctrd.channel())
        .update(s.req(UpdateContainerRequest {
            container: Some(Container {
                id: id.to_string(),
                spec: Some(spec),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".to_string()],
            }),
        }))
        .await
        .map_err(cerr("containers.update"))?;
    Ok(())
}
