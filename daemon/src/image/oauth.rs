//! The CRI `AuthConfig.identity_token`: an OAuth2 refresh token (from a
//! kubelet credential provider or a docker config `identitytoken`) traded
//! per registry host for a bearer token, as containerd's docker authorizer
//! does: ping `/v2/`, read the `WWW-Authenticate: Bearer realm=…,service=…`
//! challenge, POST a form `grant_type=refresh_token` to the realm, and use
//! the answer's `access_token` (or `token`) as the bearer for that host.
//!
//! Why a request of our own: oci-client 0.18 only knows the GET token flow
//! (anonymous or basic) and has no hook for another grant, but it accepts a
//! ready bearer token (`RegistryAuth::Bearer`). So this module only fetches
//! that token, through the same reqwest oci-client uses, with a client built
//! from the same hosts.toml settings as the host's oci-client (plain HTTP,
//! CAs, skip_verify). A mirror is challenged on its own: its realm may differ.
//!
//! Token servers without the POST grant (containerd names GCR: 404,
//! Artifactory: 401, ACR: 400) get, as in containerd, the plain GET token
//! request with the identity token as the password of an empty user.
//!
//! Not done (containerd does it): fetching a new token when the registry
//! refuses an expired one during a very long pull.

use super::hosts::RegistryHost;
use crate::error::Error;
use http_auth::parser::ChallengeParser;
use oci_client::secrets::RegistryAuth;
use std::time::Duration;

/// The OAuth2 `client_id` crid presents (containerd sends "containerd-client").
pub const CLIENT_ID: &str = "crid";
/// Bound on each request of the exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a refusing token server's answer goes into the error.
const MAX_ERROR_BODY: usize = 512;

/// What a registry's `/v2/` answer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Token auth: fetch a bearer token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// The `service` parameter to pass back, if given.
        service: Option<String>,
    },
    /// HTTP Basic auth (which an identity token cannot answer).
    Basic,
}

/// The first challenge crid can answer in a `WWW-Authenticate` value
/// (Bearer with a realm preferred over Basic); None if there is none.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut basic = false;
    for c in ChallengeParser::new(header).flatten() {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if let Some(realm) = param("realm").filter(|r| !r.is_empty()) {
                return Some(Challenge::Bearer {
                    realm,
                    service: param("service"),
                });
            }
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// The form of the refresh-token grant for pulling `repository`.
pub fn token_form(
    refresh_token: &str,
    service: Option<&str>,
    repository: &str,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh_token.to_string()),
        ("client_id", CLIENT_ID.to_string()),
        ("scope", format!("repository:{repository}:pull")),
    ];
    if let Some(s) = service {
        form.push(("service", s.to_string()));
    }
    form
}

/// The bearer token in a token server's JSON answer: `access_token`, else
/// `token` (the two names the distribution spec allows).
pub fn parse_token_response(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        token: String,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    if !a.access_token.is_empty() {
        Ok(a.access_token)
    } else if !a.token.is_empty() {
        Ok(a.token)
    } else {
        Err("token answer holds no access_token or token".into())
    }
}

/// An HTTP client honouring `host`'s hosts.toml settings; `cas` are the PEM
/// files named by `ca`, already read.
pub fn http_client(host: &RegistryHost, cas: &[Vec<u8>]) -> Result<reqwest::Client, Error> {
    // As in registry::client_for: rustls needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for pem in cas {
        certs.push(reqwest::Certificate::from_pem(pem).map_err(|e| {
            Error::InvalidArgument(format!("registry host {}: bad CA: {e}", host.host))
        })?);
    }
    reqwest::Client::builder()
        .danger_accept_invalid_certs(host.skip_verify)
        .tls_certs_merge(certs)
        .connect_timeout(Duration::from_secs(30))
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("crid/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("registry host {}: HTTP client: {e}", host.host)))
}

/// Trades `refresh_token` for the credentials to pull `repository` from `host`.
pub async fn exchange(
    client: &reqwest::Client,
    host: &RegistryHost,
    repository: &str,
    refresh_token: &str,
) -> Result<RegistryAuth, Error> {
    let scheme = if host.plain_http { "http" } else { "https" };
    let ping = format!("{scheme}://{}/v2/", host.host);
    let failed = |what: &str, e: reqwest::Error| {
        Error::Internal(format!(
            "registry host {}: {what}: {}",
            host.host,
            super::registry::with_sources(&e)
        ))
    };
    let res = client
        .get(&ping)
        .send()
        .await
        .map_err(|e| failed(&format!("GET {ping}"), e))?;
    let header = res
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let (realm, service) = match parse_challenge(&header) {
        Some(Challenge::Bearer { realm, service }) => (realm, service),
        // Basic needs a user name, which an identity token lacks (containerd
        // fails the same way: "no basic auth credentials").
        Some(Challenge::Basic) => {
            return Err(Error::Unauthenticated(format!(
                "registry host {}: asks for basic auth, which an identity token cannot answer",
                host.host
            )))
        }
        None => {
            tracing::debug!(host = %host.host, status = %res.status(), "registry asks for no token auth");
            return Ok(RegistryAuth::Anonymous);
        }
    };
    let form = token_form(refresh_token, service.as_deref(), repository);
    let post = client.post(&realm).form(&form);
    let (mut status, mut body) = send(post, &format!("POST {realm}"), &failed).await?;
    let mut answers = format!("POST: HTTP {status}: {}", excerpt(&body));
    if matches!(status.as_u16(), 400 | 401 | 404) {
        // No POST grant there: the GET token request (see the module doc).
        let scope = form
            .iter()
            .filter(|(k, _)| *k == "scope" || *k == "service")
            .collect::<Vec<_>>();
        let get = client
            .get(&realm)
            .query(&scope)
            .basic_auth("", Some(refresh_token));
        (status, body) = send(get, &format!("GET {realm}"), &failed).await?;
        answers.push_str(&format!("; GET: HTTP {status}: {}", excerpt(&body)));
    }
    if !status.is_success() {
        let msg = format!(
            "registry host {}: token service {realm} refused the identity token ({answers})",
            host.host
        );
        // OAuth2 answers a bad or expired refresh token with 400 invalid_grant.
        return Err(match status.as_u16() {
            400 | 401 | 403 => Error::Unauthenticated(msg),
            _ => Error::Internal(msg),
        });
    }
    parse_token_response(&body)
        .map(RegistryAuth::Bearer)
        .map_err(|e| Error::Internal(format!("registry host {}: {realm}: {e}", host.host)))
}

/// Sends `req` and reads the whole answer.
async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
    failed: &impl Fn(&str, reqwest::Error) -> Error,
) -> Result<(reqwest::StatusCode, bytes::Bytes), Error> {
    let res = req.send().await.map_err(|e| failed(what, e))?;
    let status = res.status();
    let body = res
        .bytes()
        .await
        .map_err(|e| failed(&format!("reading the answer to {what}"), e))?;
    Ok((status, body))
}

/// The start of an answer, for error messages.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_gives_realm_and_service() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into())
            })
        );
        // Scheme case-insensitive, service optional, escapes undone.
        assert_eq!(
            parse_challenge(r#"bearer realm="http://127.0.0.1:1/t\"x""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t\"x".into(),
                service: None
            })
        );
    }

    #[test]
    fn bearer_is_preferred_and_other_schemes_ignored() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x", Bearer realm="https://a/t",service="s""#),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge(r#"Negotiate"#), None);
        // A bearer challenge without a realm cannot be answered.
        assert_eq!(parse_challenge(r#"Bearer service="s""#), None);
    }

    #[test]
    fn form_carries_the_refresh_grant() {
        let f = token_form("r3fresh", Some("reg.example"), "team/app");
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some("refresh_token"));
        assert_eq!(get("refresh_token"), Some("r3fresh"));
        assert_eq!(get("client_id"), Some(CLIENT_ID));
        assert_eq!(get("scope"), Some("repository:team/app:pull"));
        assert_eq!(get("service"), Some("reg.example"));
        let f = token_form("r", None, "a");
        assert!(f.iter().all(|(n, _)| *n != "service"));
    }

    #[test]
    fn token_answer_prefers_access_token() {
        assert_eq!(
            parse_token_response(br#"{"access_token":"A","token":"T","expires_in":300}"#),
            Ok("A".into())
        );
        assert_eq!(parse_token_response(br#"{"token":"T"}"#), Ok("T".into()));
        assert!(parse_token_response(br#"{"access_token":""}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }
}
