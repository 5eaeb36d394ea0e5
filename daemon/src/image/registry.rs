//! The registry side of a pull, through `oci-client`: one client per
//! configured host (plain HTTP, extra CAs and skip_verify are per-client
//! settings there), hosts tried in hosts.toml order, the CRI AuthConfig
//! mapped to oci-client's anonymous / basic / bearer flows, and registry
//! errors mapped to CRI codes (unknown image → NotFound, refused
//! credentials → Unauthenticated).

use super::hosts::RegistryHost;
use super::reference::ImageRef;
use crate::error::Error;
use base64::Engine;
use crid_proto::cri::AuthConfig;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::time::Duration;

/// One host to fetch from, with its own client.
struct Source {
    host: RegistryHost,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
}

/// A repository as reachable through its configured hosts.
pub struct Registry {
    sources: Vec<Source>,
    what: String,
}

/// The host part of an AuthConfig `server_address` (scheme and path dropped).
fn server_host(addr: &str) -> &str {
    let rest = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    rest.split('/').next().unwrap_or(rest)
}

/// A blob body being received.
pub type BlobStream =
    futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// Maps the CRI's credentials to oci-client's.
pub fn registry_auth(auth: Option<&AuthConfig>) -> Result<RegistryAuth, Error> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Error::InvalidArgument("auth.auth is not base64 of user:password".into())
            })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Error::InvalidArgument("auth.auth is not base64 of user:password".into())
        })?;
        return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
    }
    if !a.identity_token.is_empty() {
        // An identity token is an OAuth2 refresh token; oci-client has no
        // refresh-token grant, so say so rather than fail obscurely.
        return Err(Error::InvalidArgument(
            "auth.identity_token (OAuth2 refresh token) is not supported by crid; pass registry_token or username/password".into(),
        ));
    }
    Ok(RegistryAuth::Anonymous)
}

/// Maps an oci-client error to crid's, naming what was fetched.
pub fn map_error(what: &str, e: OciDistributionError) -> Error {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { url } => {
            Error::Unauthenticated(format!("{what}: registry refused the credentials ({url})"))
        }
        E::AuthenticationFailure(m) => {
            Error::Unauthenticated(format!("{what}: registry authentication failed: {m}"))
        }
        E::ImageManifestNotFoundError(m) => Error::NotFound(format!("{what}: not found: {m}")),
        E::RegistryError { envelope, url } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            let denied = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            let msg = format!("{what}: registry answered {envelope} ({url})");
            if not_found {
                Error::NotFound(msg)
            } else if denied {
                Error::Unauthenticated(msg)
            } else {
                Error::Internal(msg)
            }
        }
        E::ServerError { code, url, message } => {
            let msg = format!("{what}: registry answered HTTP {code}: {message} ({url})");
            match code {
                404 => Error::NotFound(msg),
                401 | 403 => Error::Unauthenticated(msg),
                _ => Error::Internal(msg),
            }
        }
        other => Error::Internal(format!("{what}: {}", with_sources(&other))),
    }
}

/// An error and its causes: reqwest's own message hides the TLS or connect reason.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = c.source();
    }
    msg
}

fn client_for(host: &RegistryHost, max_downloads: usize) -> Result<Client, Error> {
    // reqwest's rustls needs a process-wide crypto provider; an error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for path in &host.ca {
        let data = std::fs::read(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "registry host {}: reading CA {}: {e}",
                host.host,
                path.display()
            ))
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let config = ClientConfig {
        protocol: if host.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: host.skip_verify,
        extra_root_certificates: certs,
        max_concurrent_download: max_downloads,
        connect_timeout: Some(Duration::from_secs(30)),
        platform_resolver: None,
        user_agent: concat!("crid/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    Ok(Client::new(config))
}

impl Registry {
    /// The repository of `image` through `hosts`, with credentials `auth`.
    /// As in containerd, the credentials go to every host unless the CRI's
    /// `server_address` names one, then only to that host.
    pub fn new(
        image: &ImageRef,
        hosts: Vec<RegistryHost>,
        auth: RegistryAuth,
        server_address: &str,
        max_downloads: usize,
    ) -> Result<Registry, Error> {
        let mut sources = Vec::new();
        for host in hosts {
            let mut reference = image.to_oci();
            if host.host != image.registry {
                reference.set_mirror_registry(host.host.clone());
            }
            let auth = if server_address.is_empty() || server_host(server_address) == host.host {
                auth.clone()
            } else {
                RegistryAuth::Anonymous
            };
            sources.push(Source {
                client: client_for(&host, max_downloads)?,
                host,
                reference,
                auth,
            });
        }
        Ok(Registry {
            sources,
            what: image.name(),
        })
    }

    /// Resolves the reference: the manifest (or index) bytes and their digest.
    /// By tag only hosts with `resolve`; by digest those with `pull` too.
    pub async fn resolve(&self) -> Result<(Vec<u8>, String), Error> {
        let by_digest = self
            .sources
            .first()
            .is_some_and(|s| s.reference.digest().is_some());
        let mut last = None;
        for s in &self.sources {
            if !(s.host.resolve || (by_digest && s.host.pull)) {
                continue;
            }
            match s
                .client
                .pull_manifest_raw(&s.reference, &s.auth, super::manifest::ACCEPTED)
                .await
            {
                Ok((bytes, digest)) => return Ok((bytes.to_vec(), digest)),
                Err(e) => {
                    tracing::debug!(host = %s.host.host, error = %e, "resolving failed on this host");
                    last = Some(map_error(&self.what, e));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Internal(format!("{}: no registry host may resolve it", self.what))
        }))
    }

    /// A manifest by digest (the platform's entry of an index).
    pub async fn manifest(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let mut last = None;
        for s in self.sources.iter().filter(|s| s.host.pull) {
            let r = s.reference.clone_with_digest(digest.to_string());
            match s
                .client
                .pull_manifest_raw(&r, &s.auth, super::manifest::ACCEPTED)
                .await
            {
                Ok((bytes, got)) if got == digest => return Ok(bytes.to_vec()),
                Ok((_, got)) => {
                    last = Some(Error::Internal(format!(
                        "{}: manifest {digest} arrived with digest {got}",
                        self.what
                    )))
                }
                Err(e) => last = Some(map_error(&self.what, e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal(format!("{}: no pull host", self.what))))
    }

    /// Starts receiving blob `digest`; the first host that answers serves it.
    pub async fn blob(&self, digest: &str) -> Result<BlobStream, Error> {
        let mut last = None;
        for s in self.sources.iter().filter(|s| s.host.pull) {
            // Make sure credentials are registered for blob requests too.
            s.client
                .store_auth_if_needed(s.reference.resolve_registry(), &s.auth)
                .await;
            match s.client.pull_blob_stream(&s.reference, digest).await {
                Ok(sized) => return Ok(sized.stream),
                Err(e) => last = Some(map_error(&format!("{} blob {digest}", self.what), e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal(format!("{}: no pull host", self.what))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_auth_maps_to_oci_flows() {
        assert!(matches!(
            registry_auth(None).unwrap(),
            RegistryAuth::Anonymous
        ));
        let a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), RegistryAuth::Basic(u, p) if u == "u" && p == "p")
        );
        let a = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("me:secret:x"),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), RegistryAuth::Basic(u, p) if u == "me" && p == "secret:x")
        );
        let a = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(matches!(registry_auth(Some(&a)).unwrap(), RegistryAuth::Bearer(t) if t == "tok"));
        let a = AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&a)),
            Err(Error::InvalidArgument(_))
        ));
        let a = AuthConfig {
            identity_token: "r".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&a)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            registry_auth(Some(&AuthConfig::default())).unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn server_address_limits_credentials_to_its_host() {
        assert_eq!(
            server_host("https://reg.example:5000/v1/"),
            "reg.example:5000"
        );
        assert_eq!(server_host("reg.example"), "reg.example");
        let image = ImageRef::parse("reg.example/a:1").unwrap();
        let host = |h: &str| RegistryHost {
            plain_http: false,
            host: h.into(),
            resolve: true,
            pull: true,
            skip_verify: false,
            ca: vec![],
        };
        let auth = RegistryAuth::Basic("u".into(), "p".into());
        let r = Registry::new(
            &image,
            vec![host("mirror.example"), host("reg.example")],
            auth,
            "https://reg.example",
            1,
        )
        .unwrap();
        assert!(matches!(r.sources[0].auth, RegistryAuth::Anonymous));
        assert!(matches!(r.sources[1].auth, RegistryAuth::Basic(..)));
    }

    #[test]
    fn registry_errors_map_to_cri_codes() {
        let e = map_error(
            "x",
            OciDistributionError::ServerError {
                code: 404,
                url: "u".into(),
                message: "m".into(),
            },
        );
        assert!(matches!(e, Error::NotFound(_)));
        let e = map_error(
            "x",
            OciDistributionError::UnauthorizedError { url: "u".into() },
        );
        assert!(matches!(e, Error::Unauthenticated(_)));
    }
}
