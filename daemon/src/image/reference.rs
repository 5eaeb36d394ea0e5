//! Image reference normalisation, as the kubelet and containerd do it:
//! `busybox` → `docker.io/library/busybox:latest`; a reference with both a tag
//! and a digest is pulled by digest and recorded under `repo@digest`
//! (containerd's `ParseDockerRef` drops the tag the same way).
//!
//! The grammar is checked by hand (distribution's `reference` grammar)
//! rather than with oci-spec's parser: that one compiles one large regex on
//! first use and keeps it for the process's life, ~4 MiB of crid's idle
//! heap (issue 19).

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
        let bad =
            |why: &str| Error::InvalidArgument(format!("invalid image reference {s:?}: {why}"));
        let (named, digest) = match s.split_once('@') {
            Some((n, d)) if valid_digest(d) => (n, Some(d.to_string())),
            Some(_) => return Err(bad("invalid digest")),
            None => (s, None),
        };
        // The tag's ':' is the last one after the last '/' (a port's comes before it).
        let last_slash = named.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match named[last_slash..].rfind(':') {
            Some(i) => {
                let t = &named[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(bad("invalid tag"));
                }
                (&named[..last_slash + i], Some(t))
            }
            None => (named, None),
        };
        if name.is_empty() || name.len() > 255 {
            return Err(bad("name must be 1 to 255 characters"));
        }
        let (registry, path) = split_domain(name);
        if !valid_domain(registry) {
            return Err(bad("invalid registry host"));
        }
        // Docker's ParseNormalizedNamed refuses upper case in the path.
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            // With a digest, the tag carries no meaning (containerd drops it too).
            tag: if digest.is_some() {
                None
            } else {
                Some(tag.unwrap_or("latest").to_string())
            },
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

/// The registry of names without one.
const DOCKER_HUB: &str = "docker.io";

/// Splits `name` into registry and path as docker's `splitDockerDomain`:
/// the first component is a registry if it has a '.' or ':' or is
/// `localhost` (an upper-case one stays path, refused as such, as before
/// with oci-spec's parser); `index.docker.io` is `docker.io`.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((d, rest)) if d.contains(['.', ':']) || d == "localhost" => (
            if d == "index.docker.io" {
                DOCKER_HUB
            } else {
                d
            },
            rest,
        ),
        _ => (DOCKER_HUB, name),
    }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner '-', or
/// a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => (h, Some(p)),
        _ => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    host.split('.').all(|l| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators between alphanumeric runs: ".", "_", "__" or "-"+.
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.bytes().all(|x| x == b'-'))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex`; sha256 and sha512 with their exact lengths, other
/// algorithms with at least 32 hex digits (the OCI grammar).
fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let want = match alg {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => {
            hex.len() >= 32
                && alg.split(['+', '.', '_', '-']).all(|c| {
                    c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                        && c.bytes().all(|b| b.is_ascii_alphanumeric())
                })
        }
    };
    want && hex.bytes().all(|b| b.is_ascii_hexdigit())
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
    fn grammar_corners() {
        let r = ImageRef::parse("index.docker.io/busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("[::1]:5000/a:v1.0_x-y").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("[::1]:5000", Some("v1.0_x-y"))
        );
        let r = ImageRef::parse("reg.example/a__b/c--d/e.f:1").unwrap();
        assert_eq!(r.repository, "a__b/c--d/e.f");
        let r = ImageRef::parse("Reg.Example/x").unwrap();
        assert_eq!(r.registry, "Reg.Example");
        for bad in [
            "a/-b",
            "a/b_",
            "a/b___c",
            "a//b",
            "a:",
            "a:-x",
            "reg:x/a",
            "-reg.example/a",
            "a/b@sha256:",
            "a@md5:0123",
            &format!("a:{}", "t".repeat(129)),
            &"a".repeat(256),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
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
