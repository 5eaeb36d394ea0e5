//! Image reference normalisation, as the kubelet and containerd do it:
//! `busybox` → `docker.io/library/busybox:latest`; a reference with both a tag
//! and a digest is pulled by digest and recorded under `repo@digest`
//! (containerd's `ParseDockerRef` drops the tag the same way).

use crate::error::Error;
use oci_client::Reference;

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, unless pulled by digest.
    pub tag: Option<String>,
    /// Manifest digest, when the reference names one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s`; a malformed reference is InvalidArgument naming it.
    pub fn parse(s: &str) -> Result<ImageRef, Error> {
        let r: Reference = s
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("invalid image reference {s:?}: {e}")))?;
        // Docker's ParseNormalizedNamed refuses upper case in the path.
        if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!(
                "invalid image reference {s:?}: repository name must be lowercase"
            )));
        }
        let digest = r.digest().map(str::to_string);
        // With a digest, the tag carries no meaning (containerd drops it too).
        let tag = if digest.is_some() {
            None
        } else {
            r.tag().map(str::to_string)
        };
        Ok(ImageRef {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The image store name: `repo:tag` or `repo@digest`.
    pub fn name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repo()),
            (None, Some(t)) => format!("{}:{t}", self.repo()),
            (None, None) => format!("{}:latest", self.repo()),
        }
    }

    /// `repo@digest` for a resolved manifest digest.
    pub fn digest_name(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repo())
    }

    /// The oci-client reference, fetched from `registry` as given.
    pub fn to_oci(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => {
                Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone())
            }
            (None, t) => Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// True for a bare image id or digest: `sha256:<64 hex>`.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// True for a full image id given without its algorithm (64 hex digits).
pub fn is_bare_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_normalised_like_the_kubelet() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("user/app:1.2").unwrap();
        assert_eq!(r.name(), "docker.io/user/app:1.2");
        let r = ImageRef::parse("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.name(), "127.0.0.1:5000/a/b:t");
        let r = ImageRef::parse("localhost/x").unwrap();
        assert_eq!(r.name(), "localhost/x:latest");
    }

    #[test]
    fn digest_wins_over_tag() {
        let r = ImageRef::parse(&format!("busybox:1.0@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.name(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.to_oci().digest(), Some(D));
        let r = ImageRef::parse(&format!("quay.io/a/b@{D}")).unwrap();
        assert_eq!(r.name(), format!("quay.io/a/b@{D}"));
    }

    #[test]
    fn malformed_references_are_named() {
        for bad in ["", "UPPER/case", "a:b:c", "x@sha256:short", "bad ref"] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn digests_and_ids() {
        assert!(is_digest(D));
        assert!(!is_digest("sha256:abc"));
        assert!(is_bare_hex_id(&D[7..]));
        assert!(!is_bare_hex_id("busybox"));
    }
}
