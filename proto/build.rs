//! Compiles crid's copy of the CRI v1 API and the protos containerd-client does
//! not ship (runc shim options).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    // serde derives as the k8s-cri crate had them: records and tests encode CRI
    // messages as JSON.
    // A request that does not decode is the client's error (InvalidArgument),
    // not Internal as with prost's codec: see src/codec.rs.
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .codec_path("crate::codec::CriCodec")
        .compile_protos(&["protos/cri/v1.proto"], &["protos/cri"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["protos/runc_options.proto"], &["protos"])?;
    // NRI: plain messages; crid frames ttrpc itself (daemon/src/nri/ttrpc.rs).
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(
            &["protos/nri/api.proto", "protos/nri/ttrpc.proto"],
            &["protos/nri"],
        )?;
    Ok(())
}
