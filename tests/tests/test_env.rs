//! The test environment itself: images built by the harness are real images
//! that containerd's own client pulls from the private registry and runs with
//! runc. If this fails, every image and container suite would fail for a
//! reason that is not crid's.

use crid_e2e::images::{push_index, Format};
use crid_e2e::{test_dir, ImageBuilder, PrivateContainerd, Registry, RegistryOptions};
use std::process::Command;

fn ctr(ctrd: &PrivateContainerd, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .arg("--address")
        .arg(ctrd.socket())
        .args(["-n", "crid-env-test"])
        .args(args)
        .output()
        .expect("running ctr")
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_and_runs_a_harness_image() {
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
        .await
        .unwrap();
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::busybox()
        .unwrap()
        .with_config(|c| c.env.push("GREETING=hello-from-image".into()))
        .build()
        .unwrap();
    img.push(&reg.target(), "crid-test/busybox", &["latest", "v1"])
        .unwrap();
    let docker = ImageBuilder::busybox()
        .unwrap()
        .format(Format::Docker)
        .build()
        .unwrap();
    docker
        .push(&reg.target(), "crid-test/busybox-docker", &["latest"])
        .unwrap();
    push_index(
        &reg.target(),
        "crid-test/multi",
        &["latest"],
        &[&img],
        Format::Oci,
    )
    .unwrap();

    for name in [
        "crid-test/busybox:v1",
        "crid-test/busybox-docker:latest",
        "crid-test/multi:latest",
    ] {
        let reference = format!("{}/{name}", reg.host());
        let out = ctr(&ctrd, &["images", "pull", "--plain-http", &reference]);
        assert!(
            out.status.success(),
            "pull {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reference = format!("{}/crid-test/busybox:v1", reg.host());
    let out = ctr(
        &ctrd,
        &[
            "run",
            "--rm",
            &reference,
            "env-test",
            "sh",
            "-c",
            "echo $GREETING; id -u crid",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["hello-from-image", "1000"]
    );
}

#[test]
fn authenticated_registry_refuses_anonymous_pushes() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
    })
    .unwrap();
    let img = ImageBuilder::new()
        .layer(
            vec![crid_e2e::images::Entry::file("x", "y")],
            crid_e2e::images::Compression::None,
        )
        .build()
        .unwrap();
    let anonymous = crid_e2e::PushTarget {
        host: reg.host(),
        auth: None,
    };
    assert!(img.push(&anonymous, "crid-test/x", &["latest"]).is_err());
    img.push(&reg.target(), "crid-test/x", &["latest"]).unwrap();
}
