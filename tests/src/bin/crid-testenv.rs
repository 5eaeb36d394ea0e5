//! Test-environment chores:
//! - `crid-testenv push-images 127.0.0.1:5000`: builds the shared test images
//!   and pushes them to the environment's registry (used by tests/env/up.sh);
//! - `crid-testenv cri-status /run/crid/crid.sock`: prints `Version` and verbose
//!   `Status` of a running crid as JSON (Debian has no crictl).

use crid_e2e::images::Format;
use crid_e2e::{ImageBuilder, PushTarget};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["push-images", host] => push_images(host),
        ["cri-status", socket] => cri_status(socket),
        _ => Err("usage: crid-testenv push-images HOST:PORT | cri-status SOCKET".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crid-testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn push_images(host: &str) -> Result<(), crid_e2e::BoxError> {
    let target = PushTarget {
        host: host.to_string(),
        auth: None,
    };
    let oci = ImageBuilder::busybox()?.build()?;
    oci.push(&target, "crid-test/busybox", &["latest"])?;
    println!("{host}/crid-test/busybox:latest {}", oci.id());
    let docker = ImageBuilder::busybox()?.format(Format::Docker).build()?;
    docker.push(&target, "crid-test/busybox-docker", &["latest"])?;
    println!("{host}/crid-test/busybox-docker:latest {}", docker.id());
    Ok(())
}

fn cri_status(socket: &str) -> Result<(), crid_e2e::BoxError> {
    use crid_proto::cri::{StatusRequest, VersionRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = crid_e2e::crid::connect(std::path::Path::new(socket)).await?;
        let v = c
            .runtime
            .version(VersionRequest::default())
            .await?
            .into_inner();
        let s = c
            .runtime
            .status(StatusRequest { verbose: true })
            .await?
            .into_inner();
        let out = serde_json::json!({ "version": v, "status": s.status, "info": s.info });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    })
}
