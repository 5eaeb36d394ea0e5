//! CRI translation: validate the request, call the domain, build the response.
//! One module per RPC family; `runtime_service` and `image_service` only
//! dispatch the generated tonic traits to them.

pub mod container;
pub mod container_lifecycle;
pub mod container_update;
pub mod events;
pub mod image;
pub mod image_service;
pub mod metrics;
pub mod pages;
pub mod pod_locks;
pub mod runtime_info;
pub mod runtime_service;
pub mod sandbox;
pub mod stats;
pub mod streaming;

use crate::containerd::Containerd;
use crate::sandbox::Sandboxes;
use crid_common::config::Config;
use std::sync::Arc;

/// State shared by every CRI call.
pub struct Crid {
    /// The effective configuration.
    pub config: Config,
    /// The containerd adapter.
    pub containerd: Containerd,
    /// Pod sandboxes.
    pub sandboxes: Arc<Sandboxes>,
    /// Image pulls and the image store.
    pub images: crate::image::Images,
    /// Containers.
    pub containers: Arc<crate::container::Containers>,
    /// The streaming server's URLs and tokens.
    pub streaming: crate::streaming::Streaming,
    /// Serialises container work in a pod against the pod's teardown.
    pub pod_locks: pod_locks::PodLocks,
    /// Previous CPU samples, for the stats RPCs' CPU rates.
    pub cpu_samples: stats::CpuSamples,
    /// Container events for GetContainerEvents subscribers.
    pub events: events::ContainerEvents,
    /// Each runtime handler's optional features, probed once at start.
    pub handler_features:
        std::collections::BTreeMap<String, crate::runtime_handler::HandlerFeatures>,
    /// Whether pods may have their own user namespace (probed once).
    pub userns: crate::userns::Support,
    /// NRI plugins (`[nri]`).
    pub nri: Arc<crate::nri::Nri>,
}

/// The tonic service object for both CRI services; cheap to clone.
#[derive(Clone)]
pub struct CriService {
    /// Shared state.
    pub crid: Arc<Crid>,
}

impl CriService {
    /// Builds the service around the effective config and a containerd handle.
    pub fn new(
        config: Config,
        containerd: Containerd,
        sandboxes: Arc<Sandboxes>,
        containers: Arc<crate::container::Containers>,
        streaming: crate::streaming::Streaming,
    ) -> CriService {
        CriService {
            crid: Arc::new(Crid {
                images: crate::image::Images::new(&config, containerd.clone()),
                nri: crate::nri::Nri::new(&config.nri),
                handler_features: crate::runtime_handler::probe_features(&config),
                config,
                containerd,
                sandboxes,
                containers,
                streaming,
                pod_locks: pod_locks::PodLocks::default(),
                cpu_samples: stats::CpuSamples::default(),
                events: events::ContainerEvents::default(),
                userns: crate::userns::Support::default(),
            }),
        }
    }
}

/// Turns a domain result into a tonic response, mapping the error once.
pub(crate) fn respond<T>(r: crate::error::Result<T>) -> Result<tonic::Response<T>, tonic::Status> {
    r.map(tonic::Response::new).map_err(tonic::Status::from)
}
