//! Every wire binding crid speaks, in one place: the CRI v1 API (served to the
//! kubelet), containerd's gRPC API (crid is its client), and the runc shim
//! options that containerd-client does not carry, and NRI's plugin API.

pub mod codec;

/// CRI v1 (`runtime.v1`) messages, servers and clients, from crid's own copy of
/// the API (`protos/cri/v1.proto`: k8s-cri 0.11's file plus later fields).
pub mod cri {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("runtime.v1");
}

/// containerd's gRPC API (services, types, events) and its unix-socket connector.
pub use containerd_client as containerd;

/// Options of containerd's `io.containerd.runc.v2` shim.
pub mod runc {
    #![allow(missing_docs, clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("containerd.runc.v1");

    /// The type URL containerd expects on the `Any` wrapping [`Options`].
    pub const OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

    impl Options {
        /// Wraps the options in the `Any` containerd stores as a container's runtime options.
        pub fn to_any(&self) -> prost_types::Any {
            prost_types::Any {
                type_url: OPTIONS_TYPE_URL.to_string(),
                value: prost::Message::encode_to_vec(self),
            }
        }
    }
}

/// NRI (node resource interface) messages, from crid's copy of NRI's
/// `pkg/api/api.proto` (`protos/nri/api.proto`).
pub mod nri {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("nri.pkg.api.v1alpha1");
}

/// The ttrpc wire messages (request, response, status) NRI runs on.
pub mod ttrpc {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("ttrpc");
}

#[cfg(test)]
mod tests {
    use super::runc::Options;

    #[test]
    fn runc_options_round_trip_through_any() {
        let opts = Options {
            binary_name: "runc".into(),
            shim_cgroup: "/kubepods/pod1/crid-shim".into(),
            ..Default::default()
        };
        let any = opts.to_any();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let back: Options = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(back, opts);
    }
}
