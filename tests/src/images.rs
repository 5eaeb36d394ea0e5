//! Test images built from Debian's busybox-static (and given files or random
//! bytes), pushed to a registry over the distribution HTTP API. Written
//! independently of crid's own registry client, so a pull test exercises
//! crid against a second implementation.

use crate::BoxError;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Media types used in manifests.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker schema2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    let out = h.finalize();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One entry of a layer tarball.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file with its content and mode.
    File {
        /// Path inside the image, without leading slash.
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A directory.
    Dir {
        /// Path inside the image.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside the image.
        path: String,
        /// Link target.
        target: String,
    },
    /// A hard link to a file earlier in the same layer.
    Hardlink {
        /// Path inside the image.
        path: String,
        /// The linked file's path inside the image, without leading slash.
        target: String,
    },
}

impl Entry {
    /// A file, mode 0644.
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.trim_start_matches('/').to_string(),
            data: data.into(),
            mode: 0o644,
        }
    }

    /// An executable file, mode 0755.
    pub fn exe(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.trim_start_matches('/').to_string(),
            data: data.into(),
            mode: 0o755,
        }
    }

    /// A directory with the given mode.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir {
            path: path.trim_start_matches('/').to_string(),
            mode,
        }
    }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the usual).
    Gzip,
    /// Plain tar.
    None,
}

/// Manifest flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest.
    Oci,
    /// Docker schema2 manifest.
    Docker,
}

/// The image config fields tests care about.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `User`.
    pub user: Option<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `StopSignal`.
    pub stop_signal: Option<String>,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
}

/// A blob ready to push.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type as referenced by the manifest.
    pub media_type: String,
    /// `sha256:…` of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: digest_of(&data),
            data,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

/// Builds an image: layers, config, manifest.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<(Vec<Entry>, Compression)>,
    config: ImageConfig,
    format: Format,
    architecture: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            layers: vec![],
            config: ImageConfig::default(),
            format: Format::Oci,
            architecture: "amd64".into(),
        }
    }
}

/// Users and groups of the busybox base image.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\ncrid:x:1000:1000:crid test user:/home/crid:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// Groups of the busybox base image (crid is also in group `extra`).
pub const GROUP: &str =
    "root:x:0:\ndaemon:x:1:\ncrid:x:1000:\nextra:x:2000:crid\nnogroup:x:65534:\n";

impl ImageBuilder {
    /// An empty image (no layers yet), OCI format.
    pub fn new() -> ImageBuilder {
        ImageBuilder::default()
    }

    /// An image whose first layer is busybox-static with every applet linked
    /// in /bin, /etc/passwd and /etc/group, /tmp and home dirs; Cmd `sh`.
    pub fn busybox() -> Result<ImageBuilder, BoxError> {
        let mut b = ImageBuilder::new();
        b.layers.push((busybox_entries()?, Compression::Gzip));
        b.config.cmd = Some(vec!["sh".into()]);
        b.config.env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
        Ok(b)
    }

    /// Adds a layer of `entries`.
    pub fn layer(mut self, entries: Vec<Entry>, compression: Compression) -> ImageBuilder {
        self.layers.push((entries, compression));
        self
    }

    /// Adds a layer holding one file of `size` pseudo-random (incompressible) bytes.
    pub fn random_layer(self, path: &str, size: usize, seed: u64) -> ImageBuilder {
        let data = random_bytes(size, seed);
        self.layer(vec![Entry::file(path, data)], Compression::Gzip)
    }

    /// Replaces the image config fields.
    pub fn config(mut self, config: ImageConfig) -> ImageBuilder {
        self.config = config;
        self
    }

    /// Changes a field of the config in place.
    pub fn with_config(mut self, f: impl FnOnce(&mut ImageConfig)) -> ImageBuilder {
        f(&mut self.config);
        self
    }

    /// Manifest flavour (OCI by default).
    pub fn format(mut self, format: Format) -> ImageBuilder {
        self.format = format;
        self
    }

    /// Architecture in the config (amd64 by default).
    pub fn architecture(mut self, arch: &str) -> ImageBuilder {
        self.architecture = arch.into();
        self
    }

    /// Tars, compresses and hashes everything.
    pub fn build(&self) -> Result<BuiltImage, BoxError> {
        let mut layers = vec![];
        let mut diff_ids = vec![];
        for (entries, compression) in &self.layers {
            let tar = tar_of(entries)?;
            diff_ids.push(digest_of(&tar));
            let (media_type, data) = match (compression, self.format) {
                (Compression::Gzip, f) => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&tar)?;
                    let mt = if f == Format::Oci {
                        media::OCI_LAYER_GZIP
                    } else {
                        media::DOCKER_LAYER_GZIP
                    };
                    (mt, gz.finish()?)
                }
                (Compression::None, f) => {
                    let mt = if f == Format::Oci {
                        media::OCI_LAYER_TAR
                    } else {
                        media::DOCKER_LAYER_TAR
                    };
                    (mt, tar)
                }
            };
            layers.push(Blob::new(media_type, data));
        }
        let c = &self.config;
        let mut cfg = serde_json::Map::new();
        if let Some(v) = &c.entrypoint {
            cfg.insert("Entrypoint".into(), serde_json::json!(v));
        }
        if let Some(v) = &c.cmd {
            cfg.insert("Cmd".into(), serde_json::json!(v));
        }
        if !c.env.is_empty() {
            cfg.insert("Env".into(), serde_json::json!(c.env));
        }
        if let Some(v) = &c.user {
            cfg.insert("User".into(), serde_json::json!(v));
        }
        if let Some(v) = &c.working_dir {
            cfg.insert("WorkingDir".into(), serde_json::json!(v));
        }
        if let Some(v) = &c.stop_signal {
            cfg.insert("StopSignal".into(), serde_json::json!(v));
        }
        if !c.labels.is_empty() {
            let labels: serde_json::Map<String, serde_json::Value> = c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            cfg.insert("Labels".into(), serde_json::Value::Object(labels));
        }
        let config_json = serde_json::json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": self.architecture,
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": self.layers.iter().map(|_| serde_json::json!({"created_by": "crid-e2e ImageBuilder"})).collect::<Vec<_>>(),
        });
        let config_mt = if self.format == Format::Oci {
            media::OCI_CONFIG
        } else {
            media::DOCKER_CONFIG
        };
        let config = Blob::new(config_mt, serde_json::to_vec(&config_json)?);
        let manifest_mt = if self.format == Format::Oci {
            media::OCI_MANIFEST
        } else {
            media::DOCKER_MANIFEST
        };
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_mt,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(manifest_mt, serde_json::to_vec(&manifest_json)?);
        Ok(BuiltImage {
            layers,
            config,
            manifest,
            diff_ids,
            architecture: self.architecture.clone(),
        })
    }
}

/// A built image: its blobs and manifest.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Layer blobs in order.
    pub layers: Vec<Blob>,
    /// Config blob; its digest is the image id the kubelet sees.
    pub config: Blob,
    /// Manifest blob.
    pub manifest: Blob,
    /// Uncompressed layer digests.
    pub diff_ids: Vec<String>,
    /// Architecture in the config.
    pub architecture: String,
}

impl BuiltImage {
    /// The image id (config digest).
    pub fn id(&self) -> &str {
        &self.config.digest
    }

    /// Pushes blobs and the manifest under each of `tags` to `repo` on `target`.
    pub fn push(&self, target: &PushTarget, repo: &str, tags: &[&str]) -> Result<(), BoxError> {
        for blob in self.layers.iter().chain(std::iter::once(&self.config)) {
            target.push_blob(repo, blob)?;
        }
        for tag in tags {
            target.put_manifest(repo, tag, &self.manifest)?;
        }
        Ok(())
    }
}

/// Pushes `images` (by digest) and a multi-platform index of them under
/// `tags` to `repo`; returns the index blob.
pub fn push_index(
    target: &PushTarget,
    repo: &str,
    tags: &[&str],
    images: &[&BuiltImage],
    format: Format,
) -> Result<Blob, BoxError> {
    let mt = if format == Format::Oci {
        media::OCI_INDEX
    } else {
        media::DOCKER_LIST
    };
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|img| {
            let mut d = img.manifest.descriptor();
            d["platform"] = serde_json::json!({"architecture": img.architecture, "os": "linux"});
            d
        })
        .collect();
    let index = Blob::new(
        mt,
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}),
        )?,
    );
    for img in images {
        img.push(target, repo, &[])?;
        target.put_manifest(repo, &img.manifest.digest, &img.manifest)?;
    }
    for tag in tags {
        target.put_manifest(repo, tag, &index)?;
    }
    Ok(index)
}

/// A registry to push to.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// `host:port`, plain HTTP.
    pub host: String,
    /// Basic-auth credentials, if the registry wants them.
    pub auth: Option<(String, String)>,
}

impl PushTarget {
    fn req(&self, method: &str, url: &str) -> ureq::Request {
        let r = ureq::request(method, url);
        match &self.auth {
            Some((u, p)) => {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                r.set("Authorization", &format!("Basic {token}"))
            }
            None => r,
        }
    }

    /// Uploads a blob unless the registry has it (monolithic upload).
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<(), BoxError> {
        let base = format!("http://{}/v2/{repo}", self.host);
        if self
            .req("HEAD", &format!("{base}/blobs/{}", blob.digest))
            .call()
            .is_ok()
        {
            return Ok(());
        }
        let resp = self.req("POST", &format!("{base}/blobs/uploads/")).call()?;
        let location = resp
            .header("Location")
            .ok_or("registry gave no upload Location")?
            .to_string();
        let mut url = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&blob.digest);
        self.req("PUT", &url)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(&blob.data)?;
        Ok(())
    }

    /// Puts a manifest (or index) under a tag or digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Blob,
    ) -> Result<(), BoxError> {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.host);
        self.req("PUT", &url)
            .set("Content-Type", &manifest.media_type)
            .send_bytes(&manifest.data)?;
        Ok(())
    }
}

/// Deterministic incompressible bytes (xorshift64*).
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// The busybox base layer: the static binary, an applet symlink for each
/// applet it lists, users, groups and the usual directories.
fn busybox_entries() -> Result<Vec<Entry>, BoxError> {
    let bin = std::fs::read("/bin/busybox")
        .map_err(|e| format!("reading /bin/busybox (package busybox-static): {e}"))?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()?;
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("tmp", 0o1777),
        Entry::dir("root", 0o700),
        Entry::dir("home", 0o755),
        Entry::dir("home/crid", 0o755),
        Entry::dir("proc", 0o555),
        Entry::dir("sys", 0o555),
        Entry::dir("dev", 0o755),
        Entry::dir("var", 0o755),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::exe("bin/busybox", bin),
        Entry::file("etc/passwd", PASSWD),
        Entry::file("etc/group", GROUP),
    ];
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            entries.push(Entry::Symlink {
                path: format!("bin/{applet}"),
                target: "busybox".into(),
            });
        }
    }
    Ok(entries)
}

/// A tarball of `entries` with fixed ownership and times (reproducible digests).
fn tar_of(entries: &[Entry]) -> Result<Vec<u8>, BoxError> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_767_225_600);
        match e {
            Entry::File { path, data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_reproducible_and_ids_are_config_digests() {
        let a = ImageBuilder::new()
            .layer(vec![Entry::file("a", "x")], Compression::None)
            .build()
            .unwrap();
        let b = ImageBuilder::new()
            .layer(vec![Entry::file("a", "x")], Compression::None)
            .build()
            .unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id(), digest_of(&a.config.data));
        assert_eq!(
            a.diff_ids[0], a.layers[0].digest,
            "uncompressed layer: diff id = digest"
        );
        let m: serde_json::Value = serde_json::from_slice(&a.manifest.data).unwrap();
        assert_eq!(m["config"]["digest"], a.id());
    }

    #[test]
    fn random_bytes_are_deterministic_and_sized() {
        assert_eq!(random_bytes(1001, 7), random_bytes(1001, 7));
        assert_ne!(random_bytes(64, 7), random_bytes(64, 8));
        assert_eq!(random_bytes(1001, 7).len(), 1001);
    }
}
