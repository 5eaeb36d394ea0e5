//! Image service end to end: PullImage into a private containerd from a
//! private registry, then ListImages / ImageStatus / RemoveImage /
//! ImageFsInfo as the kubelet sees them, and what `ctr` sees.

use crid_e2e::fake_registry::{FakeRegistry, Fault};
use crid_e2e::images::{push_index, BuiltImage, Compression, Entry, Format, ImageBuilder};
use crid_e2e::{test_dir, CridProcess, PrivateContainerd, Registry, RegistryOptions};
use crid_proto::cri;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

/// One test's world: containerd, crid (certs.d under the test dir), a registry.
struct World {
    crid: CridProcess,
    ctrd: PrivateContainerd,
    certs_d: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(tweak: impl FnOnce(&mut crid_common::config::Config)) -> World {
        let dir = test_dir();
        let ctrd = PrivateContainerd::start(&dir.path().join("containerd"))
            .await
            .unwrap();
        let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
        let certs_d = dir.path().join("certs.d");
        std::fs::create_dir_all(&certs_d).unwrap();
        config.registry.config_path = certs_d.clone();
        tweak(&mut config);
        let crid = CridProcess::start(config).await.unwrap();
        World {
            crid,
            ctrd,
            certs_d,
            _dir: dir,
        }
    }

    async fn image(
        &self,
    ) -> cri::image_service_client::ImageServiceClient<tonic::transport::Channel> {
        self.crid.clients().await.unwrap().image
    }

    async fn pull(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, tonic::Status> {
        self.image()
            .await
            .pull_image(cri::PullImageRequest {
                image: Some(spec(image)),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    async fn status(&self, image: &str) -> Option<cri::Image> {
        self.image()
            .await
            .image_status(cri::ImageStatusRequest {
                image: Some(spec(image)),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
    }

    async fn list(&self) -> Vec<cri::Image> {
        self.image()
            .await
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images
    }

    async fn remove(&self, image: &str) {
        self.image()
            .await
            .remove_image(cri::RemoveImageRequest {
                image: Some(spec(image)),
            })
            .await
            .unwrap();
    }

    /// Stops crid and starts it again with the same config.
    async fn restart(&mut self) {
        let config = self.crid.config.clone();
        self.crid.stop();
        self.crid = CridProcess::start(config).await.unwrap();
    }

    /// `ctr -n crid <args>` against the private containerd.
    fn ctr(&self, args: &[&str]) -> String {
        ctr(&self.ctrd.socket(), args)
    }
}

fn ctr(socket: &Path, args: &[&str]) -> String {
    crid_e2e::ctr(socket, args)
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_digest_and_tag_at_digest_into_containerd_stores() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::busybox()
        .unwrap()
        .layer(vec![Entry::file("etc/hello", "hi\n")], Compression::None)
        .with_config(|c| c.user = Some("1000:1000".into()))
        .build()
        .unwrap();
    img.push(&reg.target(), "test/bb", &["v1"]).unwrap();
    let w = World::start(|_| {}).await;
    let host = reg.host();

    let by_tag = format!("{host}/test/bb:v1");
    let id = w.pull(&by_tag, None).await.unwrap();
    assert_eq!(id, img.id(), "image_ref is the config digest");

    let st = w.status(&by_tag).await.expect("image present");
    assert_eq!(st.id, img.id());
    assert_eq!(st.repo_tags, vec![by_tag.clone()]);
    let by_digest = format!("{host}/test/bb@{}", img.manifest.digest);
    assert_eq!(st.repo_digests, vec![by_digest.clone()]);
    assert_eq!(st.uid.as_ref().map(|u| u.value), Some(1000));
    let total: usize = img.layers.iter().map(|l| l.data.len()).sum::<usize>()
        + img.config.data.len()
        + img.manifest.data.len();
    assert_eq!(st.size, total as u64);
    // Verbose status carries the image config.
    let verbose = w
        .image()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(spec(&by_tag)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000", "{info}");
    assert_eq!(
        info["imageSpec"]["rootfs"]["diff_ids"],
        serde_json::json!(img.diff_ids)
    );
    // Looked up by id, too.
    assert_eq!(w.status(img.id()).await.unwrap().id, img.id());
    assert_eq!(w.status(&img.id()[7..]).await.unwrap().id, img.id());

    // By digest, and tag@digest: same image, no new tag.
    assert_eq!(w.pull(&by_digest, None).await.unwrap(), img.id());
    let tag_at = format!("{host}/test/bb:v1@{}", img.manifest.digest);
    assert_eq!(w.pull(&tag_at, None).await.unwrap(), img.id());
    let all = w.list().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].repo_tags, vec![by_tag.clone()]);

    // containerd's own client sees the image and its unpacked snapshots.
    let names = w.ctr(&["images", "ls", "-q"]);
    assert!(names.lines().any(|l| l == by_tag), "{names}");
    assert!(names.lines().any(|l| l == by_digest), "{names}");
    let check = w.ctr(&["images", "check"]);
    assert!(check.contains("complete"), "{check}");
    let snaps = w.ctr(&["snapshots", "ls"]);
    assert_eq!(
        snaps.lines().filter(|l| l.contains("Committed")).count(),
        2,
        "{snaps}"
    );
    // A container can be made from the snapshot: prepare one with ctr and look inside.
    let mnt = w.crid.config.runtime_dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounts = w.ctr(&["images", "mount", &by_tag, mnt.to_str().unwrap()]);
    let hello = std::fs::read_to_string(mnt.join("etc/hello"));
    let busybox = mnt.join("bin/busybox").exists();
    w.ctr(&["images", "unmount", "--rm", mnt.to_str().unwrap()]);
    assert_eq!(hello.unwrap(), "hi\n", "{mounts}");
    assert!(busybox);
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_share_one_image_and_remove_by_tag_removes_all_names() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let host = reg.host();
    let a = ImageBuilder::new()
        .random_layer("a.bin", 4096, 1)
        .build()
        .unwrap();
    a.push(&reg.target(), "multi/a", &["t1", "t2", "t3"])
        .unwrap();
    let b = ImageBuilder::new()
        .random_layer("b.bin", 4096, 2)
        .format(Format::Docker)
        .build()
        .unwrap();
    b.push(&reg.target(), "multi/b", &["x"]).unwrap();
    let c = ImageBuilder::new()
        .layer(vec![Entry::file("c", "c")], Compression::None)
        .build()
        .unwrap();
    c.push(&reg.target(), "multi/c", &["y"]).unwrap();
    let w = World::start(|_| {}).await;

    for t in ["t1", "t2", "t3"] {
        assert_eq!(
            w.pull(&format!("{host}/multi/a:{t}"), None).await.unwrap(),
            a.id()
        );
    }
    assert_eq!(
        w.pull(&format!("{host}/multi/b:x"), None).await.unwrap(),
        b.id()
    );
    assert_eq!(
        w.pull(&format!("{host}/multi/c:y"), None).await.unwrap(),
        c.id()
    );

    let all = w.list().await;
    assert_eq!(all.len(), 3, "{all:?}");
    let ia = all.iter().find(|i| i.id == a.id()).unwrap();
    assert_eq!(
        ia.repo_tags,
        sorted(
            ["t1", "t2", "t3"]
                .iter()
                .map(|t| format!("{host}/multi/a:{t}"))
                .collect()
        )
    );
    assert_eq!(
        ia.repo_digests,
        vec![format!("{host}/multi/a@{}", a.manifest.digest)]
    );

    // Filtered listing.
    let only = w
        .image()
        .await
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(spec(&format!("{host}/multi/b:x"))),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, b.id());

    // Removing by one tag removes every name of the image.
    w.remove(&format!("{host}/multi/a:t2")).await;
    for t in ["t1", "t2", "t3"] {
        assert!(w.status(&format!("{host}/multi/a:{t}")).await.is_none());
    }
    assert!(w.status(a.id()).await.is_none());
    assert_eq!(w.list().await.len(), 2);
    let names = w.ctr(&["images", "ls", "-q"]);
    assert!(!names.contains("multi/a"), "{names}");
    // Its content went with it (GC ran synchronously on the last delete).
    let content = w.ctr(&["content", "ls", "-q"]);
    assert!(!content.contains(&a.layers[0].digest), "{content}");
    // Removing again, or something never pulled, succeeds.
    w.remove(&format!("{host}/multi/a:t1")).await;
    w.remove("never/pulled:1").await;
    // Remove by id.
    w.remove(c.id()).await;
    assert!(w.status(&format!("{host}/multi/c:y")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_platform_index_resolves_to_the_node_platform() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let host = reg.host();
    let amd = ImageBuilder::new()
        .random_layer("amd", 1000, 3)
        .build()
        .unwrap();
    let arm = ImageBuilder::new()
        .random_layer("arm", 1000, 4)
        .architecture("arm64")
        .build()
        .unwrap();
    let (mine, other) = if std::env::consts::ARCH == "aarch64" {
        (&arm, &amd)
    } else {
        (&amd, &arm)
    };
    let index = push_index(
        &reg.target(),
        "idx/app",
        &["latest"],
        &[&arm, &amd],
        Format::Oci,
    )
    .unwrap();
    let w = World::start(|_| {}).await;
    let id = w.pull(&format!("{host}/idx/app"), None).await.unwrap();
    assert_eq!(id, mine.id());
    assert_ne!(id, other.id());
    let st = w.status(&format!("{host}/idx/app:latest")).await.unwrap();
    assert_eq!(
        st.repo_digests,
        vec![format!("{host}/idx/app@{}", index.digest)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registry_with_good_and_bad_credentials() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
    })
    .unwrap();
    let img = ImageBuilder::new()
        .random_layer("x", 2000, 5)
        .build()
        .unwrap();
    img.push(&reg.target(), "private/app", &["1"]).unwrap();
    let w = World::start(|_| {}).await;
    let name = format!("{}/private/app:1", reg.host());

    let e = w.pull(&name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let bad = cri::AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = w.pull(&name, Some(bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(w.status(&name).await.is_none());

    // Credentials meant for another server are not sent to this one.
    let elsewhere = cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        server_address: "https://other.example".into(),
        ..Default::default()
    };
    let e = w.pull(&name, Some(elsewhere)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let good = cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        server_address: reg.host(),
        ..Default::default()
    };
    assert_eq!(w.pull(&name, Some(good)).await.unwrap(), img.id());
    // The `auth` field (base64 user:password) works too, on a fresh name.
    w.remove(&name).await;
    let encoded = cri::AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(), // alice:s3cret
        ..Default::default()
    };
    assert_eq!(w.pull(&name, Some(encoded)).await.unwrap(), img.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_and_unknown_images() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let w = World::start(|_| {}).await;
    let e = w.pull("Not A/Ref::", None).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("Not A/Ref::"), "{}", e.message());
    let e = w
        .pull(&format!("{}/no/such:tag", reg.host()), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no/such"), "{}", e.message());
    assert!(w.status("no/such:tag").await.is_none());
    assert!(w.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_in_hosts_toml_are_used_and_give_one_image_id() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::new()
        .random_layer("m", 3000, 6)
        .build()
        .unwrap();
    img.push(&reg.target(), "library/app", &["1"]).unwrap();
    let w = World::start(|_| {}).await;
    // Two registry names that exist only through certs.d: one as a mirror
    // entry in front of an unreachable server, one as its plain-HTTP server.
    let m1 = w.certs_d.join("mirror-one.invalid");
    std::fs::create_dir_all(&m1).unwrap();
    std::fs::write(
        m1.join("hosts.toml"),
        format!(
            "server = \"https://mirror-one.invalid\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host()
        ),
    )
    .unwrap();
    let m2 = w.certs_d.join("other.invalid:5000");
    std::fs::create_dir_all(&m2).unwrap();
    std::fs::write(
        m2.join("hosts.toml"),
        format!("server = \"http://{}\"\n", reg.host()),
    )
    .unwrap();

    let a = w
        .pull("mirror-one.invalid/library/app:1", None)
        .await
        .unwrap();
    let b = w
        .pull("other.invalid:5000/library/app:1", None)
        .await
        .unwrap();
    assert_eq!(a, img.id());
    assert_eq!(b, img.id());
    let all = w.list().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0].repo_tags,
        vec![
            "mirror-one.invalid/library/app:1".to_string(),
            "other.invalid:5000/library/app:1".to_string()
        ]
    );
    // Without the config, the name is not reachable.
    std::fs::remove_dir_all(&m1).unwrap();
    assert!(w
        .pull("mirror-one.invalid/library/app:1", None)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_blob_is_rejected_and_nothing_is_committed() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::new()
        .random_layer("c", 50_000, 7)
        .build()
        .unwrap();
    img.push(&reg.target(), "bad/blob", &["1"]).unwrap();
    // Flip bytes of the layer in the registry's storage (same length).
    let hex = &img.layers[0].digest[7..];
    let data = reg.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let w = World::start(|_| {}).await;
    let e = w
        .pull(&format!("{}/bad/blob:1", reg.host()), None)
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(
        e.message().contains(&img.layers[0].digest),
        "{}",
        e.message()
    );
    assert!(w.list().await.is_empty());
    let content = w.ctr(&["content", "ls", "-q"]);
    assert!(!content.contains(&img.layers[0].digest), "{content}");
    assert!(w.ctr(&["images", "ls", "-q"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn image_fs_info_reports_the_snapshotter_filesystem() {
    let w = World::start(|_| {}).await;
    let r = w
        .image()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_filesystems.len(), 1);
    let fs = &r.image_filesystems[0];
    let mp = &fs.fs_id.as_ref().unwrap().mountpoint;
    assert!(
        mp.ends_with("io.containerd.snapshotter.v1.overlayfs"),
        "{mp}"
    );
    assert!(
        Path::new(mp).starts_with(w.ctrd.socket().parent().unwrap()),
        "{mp}"
    );
    assert!(fs.used_bytes.as_ref().unwrap().value > 0);
    assert!(fs.inodes_used.as_ref().unwrap().value > 0);
    assert!(fs.timestamp > 0);
    assert_eq!(r.container_filesystems.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_registry_triggers_the_progress_timeout_but_a_slow_one_does_not() {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("s", 200_000, 8)
        .build()
        .unwrap();
    fake.add("stall/app", "1", &img);
    let layer = img.layers[0].digest.clone();
    fake.fault("stall/app", &layer, Some(Fault::Stall));
    let w = World::start(|c| c.registry.progress_timeout_secs = 2).await;
    let name = format!("{}/stall/app:1", fake.host());

    let start = std::time::Instant::now();
    let e = w.pull(&name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("no progress"), "{}", e.message());
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    assert!(w.list().await.is_empty());

    // 10 pieces, 600 ms apart: ~6 s in all, three times the timeout, but moving.
    fake.fault(
        "stall/app",
        &layer,
        Some(Fault::Trickle(std::time::Duration::from_millis(600))),
    );
    let start = std::time::Instant::now();
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
    assert!(start.elapsed() > std::time::Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_dying_mid_pull_fails_drops_its_lease_and_the_retry_succeeds() {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("first", 10_000, 9)
        .random_layer("second", 300_000, 10)
        .build()
        .unwrap();
    fake.add("die/app", "1", &img);
    let l1 = img.layers[1].digest.clone();
    fake.fault("die/app", &l1, Some(Fault::Cut));
    // One download at a time: the first layer is in before the second dies.
    let w = World::start(|c| c.registry.max_concurrent_downloads = 1).await;
    let name = format!("{}/die/app:1", fake.host());

    let e = w.pull(&name, None).await.unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(w.list().await.is_empty());
    assert!(w.ctr(&["images", "ls", "-q"]).trim().is_empty());
    // The failed pull's lease is gone: what it fetched is containerd's GC's
    // to collect, not held for a day.
    let leases = w.ctr(&["leases", "ls"]);
    assert!(!leases.contains("crid-pull-"), "{leases}");

    fake.fault("die/app", &l1, None);
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
    assert_eq!(fake.blob_hits("die/app", &l1), 2);
    let leases = w.ctr(&["leases", "ls"]);
    assert!(!leases.contains("crid-pull-"), "{leases}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_reference_are_coalesced() {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("c", 20_000, 11)
        .build()
        .unwrap();
    fake.add("co/app", "1", &img);
    let layer = img.layers[0].digest.clone();
    fake.fault(
        "co/app",
        &layer,
        Some(Fault::Delay(std::time::Duration::from_millis(1500))),
    );
    let w = World::start(|_| {}).await;
    let name = format!("{}/co/app:1", fake.host());
    let (a, b, c) = tokio::join!(
        w.pull(&name, None),
        w.pull(&name, None),
        w.pull(&name, None)
    );
    for id in [a, b, c] {
        assert_eq!(id.unwrap(), img.id());
    }
    assert_eq!(fake.blob_hits("co/app", &layer), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn crid_restarted_mid_pull_lists_no_half_image() {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("r", 100_000, 12)
        .build()
        .unwrap();
    fake.add("rs/app", "1", &img);
    let layer = img.layers[0].digest.clone();
    fake.fault("rs/app", &layer, Some(Fault::Stall));
    let mut w = World::start(|_| {}).await;
    let name = format!("{}/rs/app:1", fake.host());

    let mut client = w.image().await;
    let req = cri::PullImageRequest {
        image: Some(spec(&name)),
        ..Default::default()
    };
    let pulling = tokio::spawn(async move { client.pull_image(req).await });
    let started = crid_e2e::wait_for(std::time::Duration::from_secs(10), || async {
        (fake.blob_hits("rs/app", &layer) > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "the pull never reached the layer");
    w.restart().await;
    assert!(pulling.await.unwrap().is_err());
    assert!(w.list().await.is_empty());
    assert!(w.ctr(&["images", "ls", "-q"]).trim().is_empty());

    fake.fault("rs/app", &layer, None);
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
}

/// A docker-registry process serving an existing storage dir over TLS; killed on drop.
struct TlsRegistry {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        crid_e2e::crid::terminate(&mut self.child, std::time::Duration::from_secs(5));
    }
}

impl TlsRegistry {
    /// CA and server cert for 127.0.0.1 in `dir`, registry on a free port over `storage`.
    async fn start(dir: &Path, storage: &Path) -> TlsRegistry {
        // A CA and a leaf for 127.0.0.1 signed by it (rustls refuses a CA
        // certificate used as the server's own).
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps: [Vec<&str>; 3] = [
            vec![
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=crid-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            vec![
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = crid_e2e::registry::free_port().unwrap();
        let config = dir.join("tls-registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
                storage.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("tls-registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let up = crid_e2e::wait_for(std::time::Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(up.is_some(), "TLS registry did not come up");
        TlsRegistry { child, port }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_registry_with_ca_or_skip_verify_from_hosts_toml() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::new()
        .random_layer("t", 5000, 13)
        .build()
        .unwrap();
    img.push(&reg.target(), "tls/app", &["1"]).unwrap();
    let w = World::start(|_| {}).await;
    let tls_dir = w.certs_d.parent().unwrap().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let tls = TlsRegistry::start(&tls_dir, &reg.storage_dir()).await;
    let host = format!("127.0.0.1:{}", tls.port);
    let host_dir = w.certs_d.join(&host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let name = format!("{host}/tls/app:1");

    // HTTPS without trusting the self-signed certificate fails.
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{host}\"\n"),
    )
    .unwrap();
    assert!(w.pull(&name, None).await.is_err());

    // With the CA (relative to the host dir) it works.
    std::fs::copy(tls_dir.join("ca.pem"), host_dir.join("ca.pem")).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{host}\"\nca = \"ca.pem\"\n"),
    )
    .unwrap();
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
    w.remove(&name).await;

    // skip_verify works without the CA.
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{host}\"\nskip_verify = true\n"),
    )
    .unwrap();
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_flow_with_credentials_or_a_registry_token() {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("b", 3000, 14)
        .build()
        .unwrap();
    fake.add("tok/app", "1", &img);
    fake.require_token("bob", "pw", "tkn-123");
    let w = World::start(|_| {}).await;
    let name = format!("{}/tok/app:1", fake.host());

    let e = w.pull(&name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let wrong = cri::AuthConfig {
        username: "bob".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let e = w.pull(&name, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Username/password traded for a token at the realm.
    let creds = cri::AuthConfig {
        username: "bob".into(),
        password: "pw".into(),
        ..Default::default()
    };
    assert_eq!(w.pull(&name, Some(creds)).await.unwrap(), img.id());
    w.remove(&name).await;

    // A registry token is used as the bearer token directly.
    let token = cri::AuthConfig {
        registry_token: "tkn-123".into(),
        ..Default::default()
    };
    assert_eq!(w.pull(&name, Some(token)).await.unwrap(), img.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn image_with_missing_content_is_absent_removable_and_pulled_again() {
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::new()
        .random_layer("g", 3000, 15)
        .build()
        .unwrap();
    img.push(&reg.target(), "gone/app", &["1"]).unwrap();
    let w = World::start(|_| {}).await;
    let name = format!("{}/gone/app:1", reg.host());
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
    assert!(w.status(&name).await.is_some());

    // Someone deletes the config blob behind crid's back: crid's image
    // index learns it from containerd's /content/delete event (handled
    // asynchronously, hence the bounded wait).
    w.ctr(&["content", "rm", img.id()]);
    let gone = crid_e2e::wait_for(std::time::Duration::from_secs(5), || async {
        w.status(&name).await.is_none().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "an image without its config is still reported"
    );
    assert!(w.list().await.is_empty());
    // Pulling again repairs it.
    assert_eq!(w.pull(&name, None).await.unwrap(), img.id());
    assert!(w.status(&name).await.is_some());

    w.ctr(&["content", "rm", img.id()]);
    w.remove(&name).await;
    let names = w.ctr(&["images", "ls", "-q"]);
    assert!(!names.lines().any(|l| l == name), "{names}");
}

/// CRI credentials made of an identity token only.
fn identity(token: &str) -> cri::AuthConfig {
    cri::AuthConfig {
        identity_token: token.into(),
        ..Default::default()
    }
}

/// A fake registry serving a fresh image as `<repo>:1` behind bearer tokens
/// that its realm hands out for the refresh token "refresh-ok".
fn refresh_token_registry(repo: &str, seed: u64) -> (FakeRegistry, BuiltImage) {
    let fake = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("i", 3000, seed)
        .build()
        .unwrap();
    fake.add(repo, "1", &img);
    fake.require_token("bob", "pw", &format!("tkn-{seed}"));
    fake.accept_refresh_token("refresh-ok");
    (fake, img)
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_is_traded_for_a_bearer_token_at_the_realm() {
    let (fake, img) = refresh_token_registry("idt/app", 16);
    let w = World::start(|_| {}).await;
    let name = format!("{}/idt/app:1", fake.host());

    // A refresh token the realm refuses: Unauthenticated, saying why.
    let e = w
        .pull(&name, Some(identity("refresh-bad")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains("refused the identity token") && e.message().contains("invalid_grant"),
        "{}",
        e.message()
    );
    assert!(w.status(&name).await.is_none());

    // The right one is POSTed as an OAuth2 refresh grant and the answer's
    // access_token opens the repository.
    assert_eq!(
        w.pull(&name, Some(identity("refresh-ok"))).await.unwrap(),
        img.id()
    );
    let posts = fake.token_posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let form = &posts[1];
    let field = |k: &str| form.get(k).map(String::as_str);
    assert_eq!(field("grant_type"), Some("refresh_token"));
    assert_eq!(field("refresh_token"), Some("refresh-ok"));
    assert_eq!(field("service"), Some("fake"));
    assert_eq!(field("scope"), Some("repository:idt/app:pull"));
    assert_eq!(field("client_id"), Some("crid"));
    assert!(w.status(&name).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_is_traded_with_each_host_separately() {
    // The mirror lacks the image and has its own token service; the server
    // has it. Both want a bearer token, each from its own realm.
    let mirror = FakeRegistry::start().unwrap();
    mirror.require_token("m", "m", "tkn-mirror");
    mirror.accept_refresh_token("refresh-ok");
    let server = FakeRegistry::start().unwrap();
    let img = ImageBuilder::new()
        .random_layer("j", 3000, 17)
        .build()
        .unwrap();
    server.add("idm/app", "1", &img);
    server.require_token("s", "s", "tkn-server");
    server.accept_refresh_token("refresh-ok");
    let w = World::start(|_| {}).await;
    let dir = w.certs_d.join(server.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            server.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let name = format!("{}/idm/app:1", server.host());
    assert_eq!(
        w.pull(&name, Some(identity("refresh-ok"))).await.unwrap(),
        img.id()
    );
    assert_eq!(mirror.token_posts().len(), 1, "mirror challenged once");
    assert_eq!(server.token_posts().len(), 1, "server challenged once");
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_falls_back_to_the_get_token_request() {
    let (fake, img) = refresh_token_registry("idg/app", 18);
    fake.token_post_unsupported();
    let w = World::start(|_| {}).await;
    let name = format!("{}/idg/app:1", fake.host());
    let e = w
        .pull(&name, Some(identity("refresh-bad")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(
        w.pull(&name, Some(identity("refresh-ok"))).await.unwrap(),
        img.id()
    );
    // Both pulls tried the POST first.
    assert_eq!(fake.token_posts().len(), 2);
}

/// Images changed with `ctr` behind crid's back (pull, tag, remove) are seen
/// by ImageStatus and ListImages: crid's index follows containerd's image
/// events. The changes are applied asynchronously, so each is awaited with a
/// bound; a change crid misses fails the test.
#[tokio::test(flavor = "multi_thread")]
async fn images_changed_with_ctr_are_seen() {
    use std::time::Duration;
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let img = ImageBuilder::new()
        .random_layer("c", 2000, 31)
        .build()
        .unwrap();
    img.push(&reg.target(), "ctr/app", &["1"]).unwrap();
    let w = World::start(|_| {}).await;
    let name = format!("{}/ctr/app:1", reg.host());
    // Loaded and followed: crid has seen its (empty) store.
    assert!(w.list().await.is_empty());
    assert!(w.status(&name).await.is_none());

    w.ctr(&["images", "pull", "--plain-http", &name]);
    let seen = crid_e2e::wait_for(Duration::from_secs(5), || async { w.status(&name).await })
        .await
        .expect("an image pulled with ctr is never seen");
    assert_eq!(seen.id, img.id());
    assert_eq!(seen.repo_tags, vec![name.clone()]);
    assert_eq!(w.list().await.len(), 1);

    // A second name for the same image joins it.
    let alias = format!("{}/ctr/alias:2", reg.host());
    w.ctr(&["images", "tag", &name, &alias]);
    let both = crid_e2e::wait_for(Duration::from_secs(5), || async {
        let s = w.status(img.id()).await?;
        (s.repo_tags.len() == 2).then_some(s.repo_tags)
    })
    .await
    .expect("a tag added with ctr is never seen");
    assert_eq!(sorted(both), sorted(vec![name.clone(), alias.clone()]));

    // Removing both names with ctr removes the image.
    w.ctr(&["images", "rm", &name]);
    let one = crid_e2e::wait_for(Duration::from_secs(5), || async {
        let s = w.status(img.id()).await?;
        (s.repo_tags.len() == 1).then_some(s.repo_tags)
    })
    .await
    .expect("a name removed with ctr is still reported");
    assert_eq!(one, vec![alias.clone()]);
    assert!(w.status(&name).await.is_none());
    w.ctr(&["images", "rm", &alias]);
    let gone = crid_e2e::wait_for(Duration::from_secs(5), || async {
        w.list().await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "an image removed with ctr is still listed");
    assert!(w.status(img.id()).await.is_none());

    // After a restart crid loads the store afresh: an image added while it
    // was down is there at once.
    let mut w = w;
    w.crid.stop();
    w.ctr(&["images", "pull", "--plain-http", &name]);
    let config = w.crid.config.clone();
    w.crid = CridProcess::start(config).await.unwrap();
    assert_eq!(
        w.status(&name).await.map(|s| s.id),
        Some(img.id().to_string())
    );
}
