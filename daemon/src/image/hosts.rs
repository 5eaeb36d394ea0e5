//! Registry hosts configuration in containerd's certs.d layout:
//! `<config dir>/<host>/hosts.toml`, else `<config dir>/_default/hosts.toml`,
//! else built-in defaults. An operator's existing containerd mirror config
//! works unchanged: `server`, `[host."<url>"]` with `capabilities`,
//! `skip_verify` and `ca`; unknown keys (e.g. `header`, `client`) are ignored
//! as containerd's own parser ignores what it does not use.

use crate::error::Error;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One place a repository may be fetched from, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` (plain) or `https`.
    pub plain_http: bool,
    /// `host[:port]` to connect to.
    pub host: String,
    /// May resolve tags to digests (`resolve` capability).
    pub resolve: bool,
    /// May serve manifests by digest and blobs (`pull` capability).
    pub pull: bool,
    /// Accept any TLS certificate.
    pub skip_verify: bool,
    /// Extra CA certificates (PEM files) to trust.
    pub ca: Vec<PathBuf>,
}

/// `hosts.toml` as containerd reads it; only the keys crid acts on.
#[derive(Debug, Default, Deserialize)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<StringOrList>,
    #[serde(default)]
    host: toml::Table,
}

/// One `[host."<url>"]` table.
#[derive(Debug, Default, Deserialize)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<StringOrList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn paths(&self, base: &Path) -> Vec<PathBuf> {
        let list = match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        };
        // containerd resolves relative CA paths against the host's directory.
        list.into_iter().map(|p| base.join(p)).collect()
    }
}

/// localhost and loopback registries default to plain HTTP, as in containerd.
fn is_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.starts_with("127.") || name == "::1"
}

/// The upstream host of a registry name (Docker Hub's API lives elsewhere).
fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        "registry-1.docker.io".into()
    } else {
        registry.into()
    }
}

/// Splits `scheme://host[/path]`; a missing scheme means https (http for localhost).
fn parse_url(url: &str) -> Result<(bool, String, String), String> {
    let (plain, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!("{url:?}: only http and https are supported"));
    } else {
        (is_localhost(url.split('/').next().unwrap_or(url)), url)
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, String::new()),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((plain, host.to_string(), path))
}

fn caps(list: &Option<Vec<String>>, default_all: bool) -> (bool, bool) {
    match list {
        None => (default_all, default_all),
        Some(l) => (
            l.iter().any(|c| c == "resolve"),
            l.iter().any(|c| c == "pull"),
        ),
    }
}

/// The hosts to try for `registry`, mirrors first, then the server.
pub fn hosts_for(config_dir: &Path, registry: &str) -> Result<Vec<RegistryHost>, Error> {
    let candidates = [config_dir.join(registry), config_dir.join("_default")];
    for dir in candidates {
        let file = dir.join("hosts.toml");
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                return parse_hosts(&text, &dir, registry).map_err(|e| {
                    Error::InvalidArgument(format!("registry hosts config {}: {e}", file.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Internal(format!("reading {}: {e}", file.display())));
            }
        }
    }
    Ok(vec![RegistryHost {
        plain_http: is_localhost(registry),
        host: default_server(registry),
        resolve: true,
        pull: true,
        skip_verify: false,
        ca: vec![],
    }])
}

/// Parses one hosts.toml found in `dir` for `registry`.
fn parse_hosts(text: &str, dir: &Path, registry: &str) -> Result<Vec<RegistryHost>, String> {
    let file: HostsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    // toml's table is sorted; containerd tries mirrors in file order.
    let mut keys: Vec<&String> = file.host.keys().collect();
    keys.sort_by_key(|k| text.find(&format!("\"{k}\"")).unwrap_or(usize::MAX));
    let mut out = Vec::new();
    for key in keys {
        let entry: HostEntry = file.host[key]
            .clone()
            .try_into()
            .map_err(|e| format!("host {key:?}: {e}"))?;
        let (plain_http, host, path) = parse_url(key)?;
        if !path.is_empty() && path != "/" && path != "/v2" && path != "/v2/" {
            tracing::warn!(host = %key, "mirror with a path prefix is not supported; skipped");
            continue;
        }
        let (resolve, pull) = caps(&entry.capabilities, true);
        out.push(RegistryHost {
            plain_http,
            host,
            resolve,
            pull,
            skip_verify: entry.skip_verify.unwrap_or(false),
            ca: entry.ca.as_ref().map(|c| c.paths(dir)).unwrap_or_default(),
        });
    }
    let (plain_http, host) = match &file.server {
        Some(s) => {
            let (p, h, _) = parse_url(s)?;
            (p, h)
        }
        None => (is_localhost(registry), default_server(registry)),
    };
    let (resolve, pull) = caps(&file.capabilities, true);
    out.push(RegistryHost {
        plain_http,
        host,
        resolve,
        pull,
        skip_verify: file.skip_verify.unwrap_or(false),
        ca: file.ca.as_ref().map(|c| c.paths(dir)).unwrap_or_default(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let h = hosts_for(dir.path(), "docker.io").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].host, "registry-1.docker.io");
        assert!(!h[0].plain_http);
        let h = hosts_for(dir.path(), "127.0.0.1:5000").unwrap();
        assert!(h[0].plain_http);
        assert_eq!(h[0].host, "127.0.0.1:5000");
        let h = hosts_for(dir.path(), "localhost:5000").unwrap();
        assert!(h[0].plain_http);
        let h = hosts_for(dir.path(), "quay.io").unwrap();
        assert!(!h[0].plain_http);
    }

    #[test]
    fn mirrors_in_file_order_then_server() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("example.com");
        std::fs::create_dir_all(&hd).unwrap();
        std::fs::write(
            hd.join("hosts.toml"),
            r#"server = "https://example.com"

[host."http://zz-mirror:5000"]
  capabilities = ["pull", "resolve"]

[host."https://aa-mirror"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
  [host."https://aa-mirror".header]
    x-custom = "1"
"#,
        )
        .unwrap();
        let h = hosts_for(dir.path(), "example.com").unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].host, "zz-mirror:5000");
        assert!(h[0].plain_http && h[0].resolve && h[0].pull);
        assert_eq!(h[1].host, "aa-mirror");
        assert!(!h[1].plain_http && !h[1].resolve && h[1].pull && h[1].skip_verify);
        assert_eq!(h[1].ca, vec![hd.join("ca.pem")]);
        assert_eq!(h[2].host, "example.com");
        assert!(h[2].resolve && h[2].pull);
    }

    #[test]
    fn default_dir_applies_to_unconfigured_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("_default");
        std::fs::create_dir_all(&hd).unwrap();
        std::fs::write(
            hd.join("hosts.toml"),
            "[host.\"http://127.0.0.1:9999\"]\ncapabilities = [\"pull\",\"resolve\"]\n",
        )
        .unwrap();
        let h = hosts_for(dir.path(), "registry.test").unwrap();
        assert_eq!(h[0].host, "127.0.0.1:9999");
        assert!(h[0].plain_http);
        assert_eq!(h[1].host, "registry.test");
        assert!(!h[1].plain_http);
    }

    #[test]
    fn plain_http_server_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("reg.test");
        std::fs::create_dir_all(&hd).unwrap();
        std::fs::write(hd.join("hosts.toml"), "server = \"http://127.0.0.1:7\"\n").unwrap();
        let h = hosts_for(dir.path(), "reg.test").unwrap();
        assert_eq!(h.len(), 1);
        assert!(h[0].plain_http);
        assert_eq!(h[0].host, "127.0.0.1:7");
        std::fs::write(hd.join("hosts.toml"), "server = \"ftp://x\"\n").unwrap();
        let e = hosts_for(dir.path(), "reg.test").unwrap_err().to_string();
        assert!(e.contains("hosts.toml") && e.contains("ftp"), "{e}");
        std::fs::write(hd.join("hosts.toml"), "server = [").unwrap();
        assert!(hosts_for(dir.path(), "reg.test").is_err());
    }

    #[test]
    fn localhost_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_localhost(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_localhost(h), "{h}");
        }
    }
}
