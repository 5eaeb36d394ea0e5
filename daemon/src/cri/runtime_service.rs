//! `runtime.v1.RuntimeService`: dispatches each RPC to its family module.
//! CheckpointContainer answers Unimplemented (no CRIU support), naming the RPC.

use super::pages::{pages, PageStream};
use super::{
    container, container_lifecycle, container_update, events, metrics, respond, runtime_info,
    sandbox, stats, streaming, CriService,
};
use crate::error::Error;
use crid_proto::cri;
use crid_proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl RuntimeService for CriService {
    type GetContainerEventsStream = events::ContainerEventStream;
    type StreamPodSandboxesStream = PageStream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = PageStream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = PageStream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = PageStream<cri::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = PageStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = req.into_inner().filter;
        let items = sandbox::list(&self.crid, cri::ListPodSandboxRequest { filter })
            .await?
            .items;
        Ok(Response::new(pages(items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    async fn stream_containers(
        &self,
        req: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let filter = req.into_inner().filter;
        let items = container::list(&self.crid, cri::ListContainersRequest { filter })
            .await?
            .containers;
        Ok(Response::new(pages(items, |containers| {
            cri::StreamContainersResponse { containers }
        })))
    }

    async fn stream_container_stats(
        &self,
        req: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = req.into_inner().filter;
        let items = stats::list_containers(&self.crid, cri::ListContainerStatsRequest { filter })
            .await?
            .stats;
        Ok(Response::new(pages(items, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        })))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = req.into_inner().filter;
        let items = stats::list_pods(&self.crid, cri::ListPodSandboxStatsRequest { filter })
            .await?
            .stats;
        Ok(Response::new(pages(items, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = metrics::list_pod_sandbox_metrics(&self.crid)
            .await?
            .pod_metrics;
        Ok(Response::new(pages(items, |pod_sandbox_metrics| {
            cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        respond(sandbox::update_resources(&self.crid, req.into_inner()).await)
    }

    async fn version(
        &self,
        _req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        respond(Ok(runtime_info::version()))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        respond(sandbox::run(&self.crid, req.into_inner()).await)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        respond(sandbox::stop(&self.crid, req.into_inner()).await)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        respond(sandbox::remove(&self.crid, req.into_inner()).await)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        respond(sandbox::status(&self.crid, req.into_inner()).await)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        respond(sandbox::list(&self.crid, req.into_inner()).await)
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        respond(container::create(std::sync::Arc::clone(&self.crid), req.into_inner()).await)
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        respond(
            container_lifecycle::start(std::sync::Arc::clone(&self.crid), req.into_inner()).await,
        )
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        respond(container_lifecycle::stop(&self.crid, req.into_inner()).await)
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        respond(container::remove(&self.crid, req.into_inner()).await)
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        respond(container::list(&self.crid, req.into_inner()).await)
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        respond(container::status(&self.crid, req.into_inner()).await)
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        respond(container_update::update_resources(&self.crid, req.into_inner()).await)
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        respond(container_lifecycle::reopen_log(&self.crid, req.into_inner()).await)
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        respond(streaming::exec_sync(&self.crid, req.into_inner()).await)
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        respond(streaming::exec(&self.crid, req.into_inner()).await)
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        respond(streaming::attach(&self.crid, req.into_inner()).await)
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        respond(streaming::port_forward(&self.crid, req.into_inner()).await)
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        respond(stats::container(&self.crid, req.into_inner()).await)
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        respond(stats::list_containers(&self.crid, req.into_inner()).await)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        respond(stats::pod(&self.crid, req.into_inner()).await)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        respond(stats::list_pods(&self.crid, req.into_inner()).await)
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        respond(Ok(runtime_info::update_runtime_config(req.into_inner())))
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        respond(runtime_info::status(&self.crid, req.into_inner()).await)
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Error::Unimplemented("CheckpointContainer").into())
    }

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(events::get_container_events(&self.crid)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        respond(Ok(metrics::list_metric_descriptors()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        respond(metrics::list_pod_sandbox_metrics(&self.crid).await)
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        respond(Ok(runtime_info::runtime_config(&self.crid)))
    }
}
