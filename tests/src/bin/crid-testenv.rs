//! Test-environment chores:
//! - `crid-testenv push-images 127.0.0.1:5000`: builds the shared test images
//!   and pushes them to the environment's registry (used by tests/env/up.sh);
//! - `crid-testenv cri-status /run/crid/crid.sock`: prints `Version` and verbose
//!   `Status` of a running crid as JSON (Debian has no crictl);
//! - `crid-testenv smoke /run/crid/crid.sock IMAGE`: what `crictl runp` +
//!   `create` + `start` + `logs` would show: pulls IMAGE (a busybox image,
//!   e.g. the one `push-images` made), runs a pod on the node's CNI network
//!   and a container printing its hostname and addresses, prints the
//!   container's status and log, then stops and removes everything;
//! - `crid-testenv critest CRITEST DEBROOT EXPECTED_SKIPS OUT_DIR [ARGS...]`:
//!   runs the CRI validation suite (a critest binary) against crid on a
//!   private node (see `crid_e2e::critest`; tests/critest/run.sh calls it),
//!   prints each failure and unexpected skip and `critest: N passed, N
//!   failed, N skipped`, and fails unless nothing failed or skipped unexpectedly;
//! - `crid-testenv kubelet KUBELET OUT_DIR [GATES]`: runs a real kubelet binary
//!   standalone on a private node with crid (see `crid_e2e::kubelet`;
//!   tests/kubelet/run.sh calls it), prints each check and `kubelet: N
//!   passed, N failed`, and fails unless every check passed; GATES
//!   (`Name=true,...`) are further kubelet feature gates.

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
        ["smoke", socket, image] => smoke(socket, image),
        ["critest", critest, debroot, skips, out, rest @ ..] => {
            critest_run(critest, debroot, skips, out, rest)
        }
        ["kubelet", kubelet, out] => kubelet_run(kubelet, out, ""),
        ["kubelet", kubelet, out, gates] => kubelet_run(kubelet, out, gates),
        _ => Err(
            "usage: crid-testenv push-images HOST:PORT | cri-status SOCKET | smoke SOCKET IMAGE \
             | critest CRITEST DEBROOT EXPECTED_SKIPS OUT_DIR [CRITEST_ARGS...] \
             | kubelet KUBELET OUT_DIR [GATES]"
                .into(),
        ),
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

fn smoke(socket: &str, image: &str) -> Result<(), crid_e2e::BoxError> {
    use crid_proto::cri;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = crid_e2e::crid::connect(std::path::Path::new(socket)).await?;
        let spec = cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        let image_ref = c
            .image
            .pull_image(cri::PullImageRequest {
                image: Some(spec.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image_ref;
        println!("pulled {image} as {image_ref}");
        let name = format!("smoke-{}", std::process::id());
        let logs = std::env::temp_dir().join(&name);
        let pod_cfg = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: name.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: logs.display().to_string(),
            ..Default::default()
        };
        let pod = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        println!("pod {pod}");
        let result = smoke_container(&mut c, &pod, &pod_cfg, spec, &logs).await;
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
        let _ = std::fs::remove_dir_all(&logs);
        println!("pod {pod} stopped and removed");
        result
    })
}

async fn smoke_container(
    c: &mut crid_e2e::CriClients,
    pod: &str,
    pod_cfg: &crid_proto::cri::PodSandboxConfig,
    image: crid_proto::cri::ImageSpec,
    logs: &std::path::Path,
) -> Result<(), crid_e2e::BoxError> {
    use crid_proto::cri;
    let id = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "smoke".into(),
                    attempt: 0,
                }),
                image: Some(image),
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo hello from $(hostname); ip -o -4 addr show | grep -v ' lo '".into(),
                ],
                log_path: "smoke.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let status = crid_e2e::wait_for(std::time::Duration::from_secs(30), || {
        let mut rt = c.runtime.clone();
        let id = id.clone();
        async move {
            let s = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
                .ok()?
                .into_inner()
                .status?;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        }
    })
    .await
    .ok_or("the container did not exit within 30 s")?;
    println!(
        "container {id}: exit code {}, reason {}",
        status.exit_code, status.reason
    );
    // The helper writes what it read within 100 ms.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(logs.join("smoke.log"))?;
    print!("{log}");
    if status.exit_code != 0 {
        return Err(format!("the container exited {}", status.exit_code).into());
    }
    Ok(())
}

fn critest_run(
    critest: &str,
    debroot: &str,
    skips: &str,
    out: &str,
    rest: &[&str],
) -> Result<(), crid_e2e::BoxError> {
    use std::path::PathBuf;
    let opts = crid_e2e::critest::RunOptions {
        critest: PathBuf::from(critest),
        debroot: PathBuf::from(debroot),
        expected_skips: PathBuf::from(skips),
        out_dir: PathBuf::from(out),
        extra_args: rest.iter().map(|s| s.to_string()).collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(crid_e2e::critest::run(&opts))?;
    for l in &outcome.leftovers {
        println!("critest left (removed): {l}");
    }
    let s = &outcome.summary;
    for f in &s.failed {
        println!("FAILED: {}\n    {}", f.spec, f.message);
    }
    for k in &outcome.unexpected_skips {
        println!("UNEXPECTED SKIP: {}\n    {}", k.spec, k.message);
    }
    if !s.not_selected.is_empty() {
        println!(
            "critest: {} specs not selected (--ginkgo.focus / --ginkgo.skip)",
            s.not_selected.len()
        );
    }
    println!(
        "critest: {} passed, {} failed, {} skipped",
        s.passed,
        s.failed.len(),
        s.skipped.len()
    );
    if outcome.ok() {
        Ok(())
    } else {
        Err(format!(
            "{} failed, {} unexpected skips (report, critest and crid logs in {out})",
            s.failed.len(),
            outcome.unexpected_skips.len()
        )
        .into())
    }
}

fn kubelet_run(kubelet: &str, out: &str, gates: &str) -> Result<(), crid_e2e::BoxError> {
    let opts = crid_e2e::kubelet::RunOptions {
        kubelet: std::path::PathBuf::from(kubelet),
        out_dir: std::path::PathBuf::from(out),
        feature_gates: crid_e2e::kubelet::parse_feature_gates(gates)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(crid_e2e::kubelet::run(&opts))?;
    println!(
        "kubelet: {} passed, {} failed",
        outcome.passed(),
        outcome.failed()
    );
    if outcome.failed() == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} kubelet checks failed (kubelet, crid and containerd logs in {out})",
            outcome.failed()
        )
        .into())
    }
}
