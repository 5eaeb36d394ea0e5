//! crid's containerd calls on a container's task and stored spec, for
//! UpdateContainerResources and the PID namespace of a TARGET container.

use crate::error::Result;
use crate::image::session::{cerr, Session};
use crid_proto::containerd::services::v1::containers_client::ContainersClient;
use crid_proto::containerd::services::v1::tasks_client::TasksClient;
use crid_proto::containerd::services::v1::{
    Container, GetContainerRequest, GetRequest, UpdateContainerRequest, UpdateTaskRequest,
};
use crid_proto::containerd::types::v1::Status as TaskStatus;
use std::collections::HashMap;

/// A task as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Host pid of the container's init process.
    pub pid: u32,
    /// Whether the task is running (not created, stopped or paused).
    pub running: bool,
}

/// The task of container `id`; `None` when it has none.
pub async fn get_task(s: &Session, id: &str) -> Result<Option<TaskInfo>> {
    let r = TasksClient::new(s.ctrd.channel())
        .get(s.req(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await;
    match r {
        Ok(resp) => Ok(resp.into_inner().process.map(|p| TaskInfo {
            pid: p.pid,
            running: p.status == TaskStatus::Running as i32,
        })),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
        Err(st) => Err(cerr("tasks.get")(st)),
    }
}

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
