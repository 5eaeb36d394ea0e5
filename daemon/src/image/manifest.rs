//! Manifests, indexes and image configs as far as crid needs them: media
//! types, descriptors, choosing the node's platform from an index, and the
//! config's user and layer diff ids. Docker schema2 and OCI are read alike.

use crate::error::Error;
use serde::Deserialize;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Every manifest type crid asks registries for.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Desc {
    /// Media type (may be absent in an index entry of an old registry).
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: i64,
    /// Platform of an index entry.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v8`.
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Index / manifest list.
    Index {
        /// Its media type.
        media_type: String,
        /// Entries.
        manifests: Vec<Desc>,
    },
    /// Image manifest.
    Manifest {
        /// Its media type.
        media_type: String,
        /// Config blob.
        config: Desc,
        /// Layers, base first.
        layers: Vec<Desc>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Option<Vec<Desc>>,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
}

/// Parses manifest or index bytes; `what` names it in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Parsed, Error> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("{what}: not a manifest: {e}")))?;
    if raw.schema_version.is_some_and(|v| v != 2) {
        return Err(Error::Internal(format!(
            "{what}: manifest schema version {:?} is not supported",
            raw.schema_version
        )));
    }
    if let Some(manifests) = raw.manifests {
        return Ok(Parsed::Index {
            media_type: raw.media_type.unwrap_or_else(|| OCI_INDEX.into()),
            manifests,
        });
    }
    match (raw.config, raw.layers) {
        (Some(config), Some(layers)) => Ok(Parsed::Manifest {
            media_type: raw.media_type.unwrap_or_else(|| OCI_MANIFEST.into()),
            config,
            layers,
        }),
        _ => Err(Error::Internal(format!(
            "{what}: neither an image manifest nor an index"
        ))),
    }
}

/// The node's platform in OCI terms: (os, architecture, variant).
pub fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        other => other,
    };
    let variant = match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    };
    ("linux", arch, variant)
}

/// Picks the entry for `platform` from an index: same os and architecture;
/// an entry with the exact variant beats one without.
pub fn choose<'a>(manifests: &'a [Desc], platform: (&str, &str, Option<&str>)) -> Option<&'a Desc> {
    let (os, arch, variant) = platform;
    let candidates: Vec<&Desc> = manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| candidates.first())
        .copied()
}

/// What crid reads from an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// The runtime part (`config`).
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    /// Layer diff ids.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The config's `config` object (Docker's capitalised keys).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// `User`: name, uid, `uid:gid`, `name:group`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// The config's `rootfs`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Parses a config blob.
pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfig, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("{what}: not an image config: {e}")))
}

/// The image user as the CRI reports it: a numeric uid, or a user name.
pub fn user_of(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    match u.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> Desc {
        Desc {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    #[test]
    fn platform_choice() {
        let list = vec![
            d("a", "windows", "amd64", None),
            d("b", "linux", "arm64", None),
            d("c", "linux", "arm64", Some("v8")),
            d("e", "linux", "amd64", None),
        ];
        assert_eq!(choose(&list, ("linux", "amd64", None)).unwrap().digest, "e");
        assert_eq!(
            choose(&list, ("linux", "arm64", Some("v8")))
                .unwrap()
                .digest,
            "c"
        );
        assert_eq!(
            choose(&list[..2], ("linux", "arm64", Some("v8")))
                .unwrap()
                .digest,
            "b"
        );
        assert!(choose(&list, ("linux", "s390x", None)).is_none());
    }

    #[test]
    fn manifests_and_indexes() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"x","digest":"sha256:c","size":3},
            "layers":[{"mediaType":"l","digest":"sha256:l","size":9}]}"#;
        match parse(m, "m").unwrap() {
            Parsed::Manifest {
                media_type, layers, ..
            } => {
                assert_eq!(media_type, DOCKER_MANIFEST);
                assert_eq!(layers[0].size, 9);
            }
            other => panic!("{other:?}"),
        }
        let i = br#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:a","size":1,
            "platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert!(
            matches!(parse(i, "i").unwrap(), Parsed::Index { media_type, .. } if media_type == OCI_INDEX)
        );
        assert!(parse(b"{}", "x").is_err());
        assert!(parse(b"nope", "x").is_err());
        assert!(parse(
            br#"{"schemaVersion":1,"layers":[],"config":{"digest":"d","size":1}}"#,
            "x"
        )
        .is_err());
    }

    #[test]
    fn users() {
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".into()));
        assert_eq!(user_of("www:www"), (None, "www".into()));
        assert_eq!(user_of(""), (None, String::new()));
        let c = parse_config(
            br#"{"config":{"User":"7"},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
            "c",
        )
        .unwrap();
        assert_eq!(c.config.unwrap().user.as_deref(), Some("7"));
        assert_eq!(c.rootfs.unwrap().diff_ids, vec!["sha256:x".to_string()]);
    }
}
