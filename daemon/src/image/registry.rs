//! The registry side of a pull, through `oci-client`: one client per
//! configured host (plain HTTP, extra CAs and skip_verify are per-client
//! settings there), hosts tried in hosts.toml order, the CRI AuthConfig
//! mapped to oci-client's anonymous / basic / bearer flows (an identity
//! token is first traded per host for a bearer token, see `oauth`), and
//! registry errors mapped to CRI codes (unknown image → NotFound, refused
//! credentials → Unauthenticated). Clients are kept across pulls
//! ([`ClientCache`]); blobs are first asked for without credentials from a
//! host that answered such requests before (or was never asked), which
//! spares oci-client's `/v2/` probe per request on registries without
//! authentication; a refusal falls back to the credentialed request.

use super::hosts::RegistryHost;
use super::oauth;
use super::reference::ImageRef;
use crate::error::Error;
use base64::Engine;
use crid_proto::cri::AuthConfig;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Credentials of a pull, from the CRI's AuthConfig.
#[derive(Clone)]
pub enum Credentials {
    /// Handled by oci-client itself: anonymous, basic or a ready bearer token.
    Oci(RegistryAuth),
    /// An OAuth2 refresh token, traded per host for a bearer token (`oauth`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Oci(a) => a.fmt(f),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A host's credentials: given, or to be obtained on first use.
enum SourceAuth {
    Ready(RegistryAuth),
    /// Exchanged once, the first time the host is asked for something; a
    /// failed exchange is retried on the next use.
    Refresh {
        refresh_token: String,
        http: reqwest::Client,
        exchanged: tokio::sync::OnceCell<RegistryAuth>,
    },
}

/// A host's clients, kept across pulls by [`ClientCache`].
pub struct HostClients {
    /// Given the pull's credentials. oci-client asks `/v2/` how to
    /// authenticate before each request to a registry that sends no
    /// challenge (it caches only tokens), one more round trip per blob.
    client: Client,
    /// Never given credentials, so it sends blob requests as they are,
    /// without that probe: what `client` sends to a registry without a
    /// challenge anyway. None where a token is always sent.
    bare: Option<Client>,
    /// Whether plain blob requests last worked (true) or failed (false),
    /// and when; unknown at first.
    open: std::sync::Mutex<Option<(bool, Instant)>>,
}

/// How long a host that refused a plain blob request is asked with
/// credentials only, before plain requests are tried again.
const CLOSED_FOR: Duration = Duration::from_secs(600);

impl HostClients {
    fn new(client: Client, bare: Option<Client>) -> HostClients {
        HostClients {
            client,
            bare,
            open: std::sync::Mutex::new(None),
        }
    }

    /// The bare client, unless plain requests failed lately.
    fn bare(&self) -> Option<&Client> {
        let open = self.open.lock().ok().and_then(|o| *o);
        match open {
            Some((false, at)) if at.elapsed() < CLOSED_FOR => None,
            _ => self.bare.as_ref(),
        }
    }

    /// Records whether a plain request worked.
    fn mark_open(&self, open: bool) {
        if let Ok(mut o) = self.open.lock() {
            *o = Some((open, Instant::now()));
        }
    }
}

/// One host to fetch from, with its own clients.
struct Source {
    host: RegistryHost,
    clients: Arc<HostClients>,
    reference: Reference,
    auth: SourceAuth,
}

impl Source {
    /// The credentials for this host, trading an identity token if needed.
    async fn auth(&self) -> Result<RegistryAuth, Error> {
        match &self.auth {
            SourceAuth::Ready(a) => Ok(a.clone()),
            SourceAuth::Refresh {
                refresh_token,
                http,
                exchanged,
            } => exchanged
                .get_or_try_init(|| {
                    oauth::exchange(http, &self.host, self.reference.repository(), refresh_token)
                })
                .await
                .cloned(),
        }
    }
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

/// Maps the CRI's credentials to crid's. Precedence as containerd's CRI
/// plugin (`ParseAuth`): username/password, then identity token, then `auth`;
/// crid honours `registry_token` (a ready bearer token) before all of them.
pub fn registry_auth(auth: Option<&AuthConfig>) -> Result<Credentials, Error> {
    let Some(a) = auth else {
        return Ok(Credentials::Oci(RegistryAuth::Anonymous));
    };
    if !a.registry_token.is_empty() {
        return Ok(Credentials::Oci(RegistryAuth::Bearer(
            a.registry_token.clone(),
        )));
    }
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Credentials::Oci(RegistryAuth::Basic(
            a.username.clone(),
            a.password.clone(),
        )));
    }
    if !a.identity_token.is_empty() {
        return Ok(Credentials::IdentityToken(a.identity_token.clone()));
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
        return Ok(Credentials::Oci(RegistryAuth::Basic(
            u.to_string(),
            p.to_string(),
        )));
    }
    Ok(Credentials::Oci(RegistryAuth::Anonymous))
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
pub(super) fn with_sources(e: &dyn std::error::Error) -> String {
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

/// The PEM files `ca` of `host` names.
fn read_cas(host: &RegistryHost) -> Result<Vec<Vec<u8>>, Error> {
    host.ca
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                Error::InvalidArgument(format!(
                    "registry host {}: reading CA {}: {e}",
                    host.host,
                    path.display()
                ))
            })
        })
        .collect()
}

/// Most clients [`ClientCache`] keeps; the oldest goes first.
const CACHED_CLIENTS: usize = 16;

/// oci-client clients kept across pulls, one per host settings and
/// credentials. Building one loads the system's CA certificates (several
/// milliseconds, more than the rest of a small pull's registry work);
/// reusing one also reuses its open connections and bearer tokens. The
/// key covers everything the client was built from and the credentials
/// it stores, so a pull never gets another pull's credentials or tokens.
#[derive(Default)]
pub struct ClientCache {
    clients: std::sync::Mutex<Vec<(String, Arc<HostClients>)>>,
}

impl ClientCache {
    /// The client for `key`, built by `build` if there is none.
    fn get_or_build(
        &self,
        key: String,
        build: impl FnOnce() -> Result<HostClients, Error>,
    ) -> Result<Arc<HostClients>, Error> {
        if let Ok(mut clients) = self.clients.lock() {
            if let Some(pos) = clients.iter().position(|(k, _)| *k == key) {
                // Most recently used last.
                let entry = clients.remove(pos);
                let client = Arc::clone(&entry.1);
                clients.push(entry);
                return Ok(client);
            }
        }
        let client = Arc::new(build()?);
        if let Ok(mut clients) = self.clients.lock() {
            if !clients.iter().any(|(k, _)| *k == key) {
                if clients.len() >= CACHED_CLIENTS {
                    clients.remove(0);
                }
                clients.push((key, Arc::clone(&client)));
            }
        }
        Ok(client)
    }
}

/// What a client is built from and will authenticate with, hashed: the
/// [`ClientCache`] key. None for credentials traded per pull (an identity
/// token's exchanged token may expire; it is not kept).
fn client_key(
    host: &RegistryHost,
    cas: &[Vec<u8>],
    max_downloads: usize,
    auth: &SourceAuth,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let SourceAuth::Ready(auth) = auth else {
        return None;
    };
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(host.host.as_bytes());
    field(&[u8::from(host.plain_http), u8::from(host.skip_verify)]);
    field(&(max_downloads as u64).to_le_bytes());
    for ca in cas {
        field(ca);
    }
    match auth {
        RegistryAuth::Anonymous => field(b"anonymous"),
        RegistryAuth::Basic(u, p) => {
            field(b"basic");
            field(u.as_bytes());
            field(p.as_bytes());
        }
        RegistryAuth::Bearer(t) => {
            field(b"bearer");
            field(t.as_bytes());
        }
    }
    Some(hex::encode(h.finalize()))
}

fn client_for(host: &RegistryHost, cas: &[Vec<u8>], max_downloads: usize) -> Result<Client, Error> {
    // reqwest's rustls needs a process-wide crypto provider; an error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = cas
        .iter()
        .map(|data| Certificate {
            encoding: CertificateEncoding::Pem,
            data: data.clone(),
        })
        .collect();
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
    /// Clients come from `cache` when one fits.
    pub fn new(
        image: &ImageRef,
        hosts: Vec<RegistryHost>,
        auth: Credentials,
        server_address: &str,
        max_downloads: usize,
        cache: &ClientCache,
    ) -> Result<Registry, Error> {
        let mut sources = Vec::new();
        for host in hosts {
            let mut reference = image.to_oci();
            if host.host != image.registry {
                reference.set_mirror_registry(host.host.clone());
            }
            let cas = read_cas(&host)?;
            let auth = if server_address.is_empty() || server_host(server_address) == host.host {
                match &auth {
                    Credentials::Oci(a) => SourceAuth::Ready(a.clone()),
                    Credentials::IdentityToken(t) => SourceAuth::Refresh {
                        refresh_token: t.clone(),
                        http: oauth::http_client(&host, &cas)?,
                        exchanged: tokio::sync::OnceCell::new(),
                    },
                }
            } else {
                SourceAuth::Ready(RegistryAuth::Anonymous)
            };
            // A bearer token is sent with every request: no probe to save.
            let plain_too = !matches!(auth, SourceAuth::Ready(RegistryAuth::Bearer(_)));
            let build = || {
                let bare = if plain_too {
                    Some(client_for(&host, &cas, max_downloads)?)
                } else {
                    None
                };
                Ok(HostClients::new(
                    client_for(&host, &cas, max_downloads)?,
                    bare,
                ))
            };
            let clients = match client_key(&host, &cas, max_downloads, &auth) {
                Some(key) => cache.get_or_build(key, build)?,
                // Traded credentials (identity token): a registry that
                // wants them challenges; plain requests would be wasted.
                None => Arc::new(HostClients::new(
                    client_for(&host, &cas, max_downloads)?,
                    None,
                )),
            };
            sources.push(Source {
                clients,
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
            let auth = match s.auth().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(host = %s.host.host, error = %e, "no credentials from this host");
                    last = Some(e);
                    continue;
                }
            };
            match s
                .clients
                .client
                .pull_manifest_raw(&s.reference, &auth, super::manifest::ACCEPTED)
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
            let auth = match s.auth().await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match s
                .clients
                .client
                .pull_manifest_raw(&r, &auth, super::manifest::ACCEPTED)
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
            if let Some(bare) = s.clients.bare() {
                match bare.pull_blob_stream(&s.reference, digest).await {
                    Ok(sized) => {
                        s.clients.mark_open(true);
                        return Ok(sized.stream);
                    }
                    Err(e) => {
                        // Refused (or anything else): ask as oci-client
                        // does, with credentials, and stop trying plain
                        // requests on this host for a while.
                        tracing::debug!(host = %s.host.host, error = %e, "plain blob request failed; retrying with credentials");
                        s.clients.mark_open(false);
                    }
                }
            }
            // Make sure credentials are registered for blob requests too.
            let auth = match s.auth().await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            s.clients
                .client
                .store_auth_if_needed(s.reference.resolve_registry(), &auth)
                .await;
            match s
                .clients
                .client
                .pull_blob_stream(&s.reference, digest)
                .await
            {
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
        use Credentials::Oci;
        assert!(matches!(
            registry_auth(None).unwrap(),
            Oci(RegistryAuth::Anonymous)
        ));
        let a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), Oci(RegistryAuth::Basic(u, p)) if u == "u" && p == "p")
        );
        let a = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("me:secret:x"),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), Oci(RegistryAuth::Basic(u, p)) if u == "me" && p == "secret:x")
        );
        let a = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), Oci(RegistryAuth::Bearer(t)) if t == "tok")
        );
        let a = AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&a)),
            Err(Error::InvalidArgument(_))
        ));
        // An identity token wins over `auth`, as in containerd.
        let a = AuthConfig {
            identity_token: "r".into(),
            auth: base64::engine::general_purpose::STANDARD.encode("me:secret"),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), Credentials::IdentityToken(t) if t == "r")
        );
        assert!(matches!(
            registry_auth(Some(&AuthConfig::default())).unwrap(),
            Oci(RegistryAuth::Anonymous)
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
        let auth = Credentials::Oci(RegistryAuth::Basic("u".into(), "p".into()));
        let r = Registry::new(
            &image,
            vec![host("mirror.example"), host("reg.example")],
            auth,
            "https://reg.example",
            1,
            &ClientCache::default(),
        )
        .unwrap();
        assert!(matches!(
            r.sources[0].auth,
            SourceAuth::Ready(RegistryAuth::Anonymous)
        ));
        assert!(matches!(
            r.sources[1].auth,
            SourceAuth::Ready(RegistryAuth::Basic(..))
        ));
        // An identity token is only traded with the host it is meant for.
        let r = Registry::new(
            &image,
            vec![host("mirror.example"), host("reg.example")],
            Credentials::IdentityToken("r".into()),
            "reg.example",
            1,
            &ClientCache::default(),
        )
        .unwrap();
        assert!(matches!(
            r.sources[0].auth,
            SourceAuth::Ready(RegistryAuth::Anonymous)
        ));
        assert!(matches!(r.sources[1].auth, SourceAuth::Refresh { .. }));
    }

    #[test]
    fn clients_are_shared_only_with_the_same_host_settings_and_credentials() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = |h: &str| RegistryHost {
            plain_http: true,
            host: h.into(),
            resolve: true,
            pull: true,
            skip_verify: false,
            ca: vec![],
        };
        let ready = |a: RegistryAuth| SourceAuth::Ready(a);
        let basic = |p: &str| ready(RegistryAuth::Basic("u".into(), p.into()));
        let key = |h: &RegistryHost, a: &SourceAuth| client_key(h, &[], 3, a).unwrap();
        let a = host("reg.example");
        assert_eq!(key(&a, &basic("p")), key(&a, &basic("p")));
        assert_ne!(key(&a, &basic("p")), key(&a, &basic("q")));
        assert_ne!(
            key(&a, &basic("p")),
            key(&a, &ready(RegistryAuth::Anonymous))
        );
        assert_ne!(
            key(&a, &basic("p")),
            key(&host("mirror.example"), &basic("p"))
        );
        let tls = RegistryHost {
            plain_http: false,
            ..a.clone()
        };
        assert_ne!(key(&a, &basic("p")), key(&tls, &basic("p")));
        assert_ne!(
            client_key(&a, &[b"ca1".to_vec()], 3, &basic("p")),
            client_key(&a, &[b"ca2".to_vec()], 3, &basic("p"))
        );
        // An identity token's traded credentials are never kept.
        let refresh = SourceAuth::Refresh {
            refresh_token: "r".into(),
            http: reqwest::Client::new(),
            exchanged: tokio::sync::OnceCell::new(),
        };
        assert!(client_key(&a, &[], 3, &refresh).is_none());

        let cache = ClientCache::default();
        let fresh = || HostClients::new(Client::default(), Some(Client::default()));
        let mut built = 0;
        for _ in 0..2 {
            cache
                .get_or_build("k".into(), || {
                    built += 1;
                    Ok(fresh())
                })
                .unwrap();
        }
        assert_eq!(built, 1, "the second pull reuses the client");
        for i in 0..CACHED_CLIENTS {
            cache
                .get_or_build(format!("other{i}"), || Ok(fresh()))
                .unwrap();
        }
        assert_eq!(cache.clients.lock().unwrap().len(), CACHED_CLIENTS);
        assert!(!cache.clients.lock().unwrap().iter().any(|(k, _)| k == "k"));
    }

    #[test]
    fn plain_requests_pause_after_a_refusal() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let h = HostClients::new(Client::default(), Some(Client::default()));
        assert!(h.bare().is_some(), "tried while unknown");
        h.mark_open(true);
        assert!(h.bare().is_some());
        h.mark_open(false);
        assert!(h.bare().is_none(), "not retried right after a refusal");
        if let Some(long_ago) = Instant::now().checked_sub(CLOSED_FOR) {
            *h.open.lock().unwrap() = Some((false, long_ago));
            assert!(h.bare().is_some(), "retried after a while");
        }
        let never = HostClients::new(Client::default(), None);
        assert!(never.bare().is_none());
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
