//! `runtime.v1.ImageService`: dispatches each RPC to the image modules.

use super::pages::{pages, PageStream};
use super::{image, respond, CriService};
use crid_proto::cri;
use crid_proto::cri::image_service_server::ImageService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl ImageService for CriService {
    type StreamImagesStream = PageStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let list = image::list(
            &self.crid,
            cri::ListImagesRequest {
                filter: req.into_inner().filter,
            },
        )
        .await?;
        Ok(Response::new(pages(list.images, |images| {
            cri::StreamImagesResponse { images }
        })))
    }

    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        respond(image::list(&self.crid, req.into_inner()).await)
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        respond(image::status(&self.crid, req.into_inner()).await)
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        respond(image::pull(&self.crid, req.into_inner()).await)
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        respond(image::remove(&self.crid, req.into_inner()).await)
    }

    async fn image_fs_info(
        &self,
        req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        respond(image::fs_info(&self.crid, req.into_inner()).await)
    }
}
