//! Compiles the protos containerd-client does not ship (runc shim options).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["protos/runc_options.proto"], &["protos"])?;
    Ok(())
}
