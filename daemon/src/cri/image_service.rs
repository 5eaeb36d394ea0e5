//! `runtime.v1.ImageService`: dispatches each RPC to the image modules.
//! RPCs whose issue has not landed answer Unimplemented, naming the RPC.

use super::CriService;
use crate::error::Error;
use crid_proto::cri;
use crid_proto::cri::image_service_server::ImageService;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        _req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        Err(Error::Unimplemented("ListImages").into())
    }

    async fn image_status(
        &self,
        _req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        Err(Error::Unimplemented("ImageStatus").into())
    }

    async fn pull_image(
        &self,
        _req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        Err(Error::Unimplemented("PullImage").into())
    }

    async fn remove_image(
        &self,
        _req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        Err(Error::Unimplemented("RemoveImage").into())
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Err(Error::Unimplemented("ImageFsInfo").into())
    }
}
