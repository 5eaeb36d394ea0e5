//! crid's configuration: TOML at /etc/crid/config.toml, every field defaulted
//! so that no file is needed, unknown keys and bad values refused at start.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where crid looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crid/config.toml";

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or named an unknown key (toml's message names it).
    #[error("parsing config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the key and line.
        message: String,
    },
    /// A key parsed but its value is not usable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `containerd.namespace`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unix socket the CRI services listen on (created 0660).
    pub socket: PathBuf,
    /// Persistent state (sandbox and container records).
    pub state_dir: PathBuf,
    /// Volatile state: netns pins, fifos, helper sockets.
    pub runtime_dir: PathBuf,
    /// Cgroup driver, reported to the kubelet by RuntimeConfig: `cgroupfs`
    /// (crid writes cgroup dirs) or `systemd` (pod slices and scopes through
    /// systemd's D-Bus API; refused at start when no systemd answers).
    pub cgroup_driver: CgroupDriver,
    /// The runtime handler an empty RunPodSandbox `runtime_handler` means;
    /// must name an entry of `runtimes`.
    pub default_runtime: String,
    /// Logging.
    pub log: LogConfig,
    /// The containerd crid drives.
    pub containerd: ContainerdConfig,
    /// CNI network configuration.
    pub cni: CniConfig,
    /// Pod sandboxes and their helpers.
    pub sandbox: SandboxConfig,
    /// Image registries and pulls.
    pub registry: RegistryConfig,
    /// The exec / attach / port-forward streaming listener.
    pub streaming: StreamingConfig,
    /// crid's own Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// NRI (node resource interface) plugins.
    pub nri: NriConfig,
    /// Runtime handlers by name (`[runtimes.<handler>]`, the `handler` of a
    /// Kubernetes RuntimeClass). `runc` (the pod helper as shim) and `runc-v2`
    /// (containerd's runc shim) are always present: a file that does not
    /// define them gets the default ones.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
}

/// The runtime handler every node has, and the default: runc driven by the
/// pod's helper as its containerd shim.
pub const DEFAULT_RUNTIME_HANDLER: &str = "runc";

/// The second handler every node has: runc under containerd's own
/// `containerd-shim-runc-v2` (one extra process per pod), for pods that
/// need containerd's shim (its `Stats`, a shim that survives a helper crash).
/// Named after its runtime type's `v2`, as handler names are DNS labels.
pub const RUNC_V2_RUNTIME_HANDLER: &str = "runc-v2";

/// containerd's runc shim (one shim process per pod).
pub const RUNC_V2_RUNTIME_TYPE: &str = "io.containerd.runc.v2";

/// The pod's crid-pod-helper as its shim (no shim process of its own).
pub const CRID_SHIM_RUNTIME_TYPE: &str = "io.containerd.crid.v1";

/// One runtime handler: how containers of pods run with it are executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandlerConfig {
    /// containerd runtime: `io.containerd.runc.v2` (containerd's runc shim)
    /// or `io.containerd.crid.v1` (the pod helper is the shim).
    pub runtime_type: String,
    /// The OCI runtime binary the shim runs: a name looked up in the shim's
    /// PATH (`runc`, `crun`) or an absolute path.
    pub binary_name: String,
    /// The OCI runtime's state root (`--root`); empty: the shim's default.
    pub root: PathBuf,
    /// Let the OCI runtime manage cgroups through systemd; may only be true
    /// with `cgroup_driver = "systemd"`, which sets it for every handler.
    pub systemd_cgroup: bool,
}

impl Default for RuntimeHandlerConfig {
    /// The default handler's settings; a `[runtimes.<handler>]` table that
    /// leaves `runtime_type` out gets the helper shim, like the default.
    fn default() -> Self {
        RuntimeHandlerConfig {
            runtime_type: CRID_SHIM_RUNTIME_TYPE.into(),
            binary_name: "runc".into(),
            root: PathBuf::new(),
            systemd_cgroup: false,
        }
    }
}

fn default_runtimes() -> BTreeMap<String, RuntimeHandlerConfig> {
    BTreeMap::from([
        (
            DEFAULT_RUNTIME_HANDLER.to_string(),
            RuntimeHandlerConfig::default(),
        ),
        (
            RUNC_V2_RUNTIME_HANDLER.to_string(),
            RuntimeHandlerConfig {
                runtime_type: RUNC_V2_RUNTIME_TYPE.into(),
                ..RuntimeHandlerConfig::default()
            },
        ),
    ])
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/crid/crid.sock"),
            state_dir: PathBuf::from("/var/lib/crid"),
            runtime_dir: PathBuf::from("/run/crid"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            default_runtime: DEFAULT_RUNTIME_HANDLER.into(),
            log: LogConfig::default(),
            containerd: ContainerdConfig::default(),
            cni: CniConfig::default(),
            sandbox: SandboxConfig::default(),
            registry: RegistryConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            nri: NriConfig::default(),
            runtimes: default_runtimes(),
        }
    }
}

/// The cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// crid writes cgroupfs paths itself (cgroup v1 and v2).
    Cgroupfs,
    /// Pods are systemd slices, helpers and containers systemd scopes in
    /// them (the kubelet's `cgroupDriver: systemd`, slice-named parents).
    Systemd,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: a level (`info`) or directives (`crid=debug,tonic=info`).
    pub level: String,
    /// `text` (human readable) or `json` (one object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// The containerd crid is a client of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub address: PathBuf,
    /// containerd namespace holding crid's containers, images and snapshots.
    pub namespace: String,
    /// Snapshotter for image layers and container root filesystems.
    pub snapshotter: String,
    /// Seconds a single health probe of containerd may take.
    pub probe_timeout_secs: u64,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            address: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "crid".into(),
            snapshotter: "overlayfs".into(),
            probe_timeout_secs: 2,
        }
    }
}

/// CNI network configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Directory of `.conflist`/`.conf`/`.json` network configs; the first by name is used.
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

/// Pod sandboxes and their per-pod helpers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The crid-pod-helper binary; empty means the one next to crid's own executable.
    pub helper_path: PathBuf,
    /// Size of each pod's /dev/shm tmpfs in bytes (the kubelet's default is 64 MiB).
    pub shm_size_bytes: u64,
    /// Seconds a helper may take for set-up (namespaces and CNI ADD).
    pub setup_timeout_secs: u64,
    /// ExecSync in a pod whose helper is its shim starts the process with
    /// crid-exec (namespaces, cgroups, credentials, seccomp set natively)
    /// instead of `runc exec`; false: always `runc exec`.
    pub native_exec: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            helper_path: PathBuf::new(),
            shm_size_bytes: 64 << 20,
            setup_timeout_secs: 60,
            native_exec: true,
        }
    }
}

/// Image registries and pulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registry hosts configuration in containerd's certs.d layout
    /// (`<config_path>/<host>/hosts.toml`, `<config_path>/_default/hosts.toml`).
    pub config_path: PathBuf,
    /// Layers of one pull fetched at the same time.
    pub max_concurrent_downloads: usize,
    /// A pull that receives no bytes for this many seconds is cancelled.
    pub progress_timeout_secs: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: PathBuf::from("/etc/crid/certs.d"),
            max_concurrent_downloads: 3,
            progress_timeout_secs: 60,
        }
    }
}

/// The streaming listener the Exec / Attach / PortForward URLs point at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// `ip:port` to listen on; port 0 picks a free port at start. The URLs
    /// name this address (an unspecified ip such as 0.0.0.0 is named as
    /// 127.0.0.1 in URLs).
    pub address: String,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS.
    pub tls_cert: PathBuf,
    /// PEM private key for `tls_cert`.
    pub tls_key: PathBuf,
    /// Seconds a streaming URL stays valid (the kubelet's is one minute).
    pub token_ttl_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1:0".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            token_ttl_secs: 60,
        }
    }
}

/// crid's own Prometheus metrics endpoint (plain HTTP, `GET /metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ip:port` to serve on, e.g. `127.0.0.1:9090`; empty (the default)
    /// turns the endpoint off. Port 0 picks a free port.
    pub address: String,
}

/// NRI: plugins that see and adjust pods and containers (containerd's
/// `[plugins."io.containerd.nri.v1.nri"]` settings, same defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// Whether NRI is on (off by default, as in containerd 1.7).
    pub enable: bool,
    /// Socket external plugins connect to; empty: no external plugins.
    pub socket_path: PathBuf,
    /// Directory of pre-installed plugins (`NN-name` executables) crid starts.
    pub plugin_path: PathBuf,
    /// Directory of their configuration (`NN-name.conf` or `name.conf`).
    pub plugin_config_path: PathBuf,
    /// How long a plugin may take to register, in milliseconds.
    pub plugin_registration_timeout_ms: u64,
    /// How long a plugin may take to answer one request, in milliseconds;
    /// a plugin that takes longer is disconnected.
    pub plugin_request_timeout_ms: u64,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            enable: false,
            socket_path: "/var/run/nri/nri.sock".into(),
            plugin_path: "/opt/nri/plugins".into(),
            plugin_config_path: "/etc/nri/conf.d".into(),
            plugin_registration_timeout_ms: 5000,
            plugin_request_timeout_ms: 2000,
        }
    }
}

impl StreamingConfig {
    /// Whether TLS is configured.
    pub fn tls(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }
}

impl Config {
    /// Reads `path`; a missing file at the default path means all defaults,
    /// a missing file anywhere else is an error (the operator named it).
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                let cfg = Config::default();
                cfg.validate()?;
                Ok(cfg)
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates TOML text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // A file defining other handlers keeps the built-in `runc` and
        // `runc-v2` ones, the way containerd's runtimes table merges over
        // its default.
        for (name, h) in default_runtimes() {
            cfg.runtimes.entry(name).or_insert(h);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The full default file, as printed by `crid --print-default-config`.
    pub fn default_toml() -> String {
        // Serialising a plain struct of strings, paths and numbers cannot fail.
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let absolute = [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("runtime_dir", &self.runtime_dir),
            ("containerd.address", &self.containerd.address),
            ("cni.conf_dir", &self.cni.conf_dir),
            ("registry.config_path", &self.registry.config_path),
        ];
        for (key, p) in absolute {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{} is not an absolute path", p.display()),
                });
            }
        }
        if let Some(p) = self.cni.bin_dirs.iter().find(|p| !p.is_absolute()) {
            return Err(ConfigError::Invalid {
                key: "cni.bin_dirs",
                reason: format!("{} is not an absolute path", p.display()),
            });
        }
        if !valid_containerd_namespace(&self.containerd.namespace) {
            return Err(ConfigError::Invalid {
                key: "containerd.namespace",
                reason: format!(
                    "{:?} is not a containerd namespace (lowercase letters, digits, '-', '_', '.'; starts with a letter or digit)",
                    self.containerd.namespace
                ),
            });
        }
        if self.containerd.snapshotter.is_empty() {
            return Err(ConfigError::Invalid {
                key: "containerd.snapshotter",
                reason: "must not be empty".into(),
            });
        }
        if self.containerd.probe_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "containerd.probe_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        if !self.sandbox.helper_path.as_os_str().is_empty()
            && !self.sandbox.helper_path.is_absolute()
        {
            return Err(ConfigError::Invalid {
                key: "sandbox.helper_path",
                reason: format!(
                    "{} is not an absolute path",
                    self.sandbox.helper_path.display()
                ),
            });
        }
        if self.sandbox.shm_size_bytes < 4096 {
            return Err(ConfigError::Invalid {
                key: "sandbox.shm_size_bytes",
                reason: "must be at least 4096".into(),
            });
        }
        if self.sandbox.setup_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "sandbox.setup_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.nri.enable {
            for (key, p) in [
                ("nri.socket_path", &self.nri.socket_path),
                ("nri.plugin_path", &self.nri.plugin_path),
                ("nri.plugin_config_path", &self.nri.plugin_config_path),
            ] {
                if !p.as_os_str().is_empty() && !p.is_absolute() {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: format!("{} is not an absolute path", p.display()),
                    });
                }
            }
            for (key, v) in [
                (
                    "nri.plugin_registration_timeout_ms",
                    self.nri.plugin_registration_timeout_ms,
                ),
                (
                    "nri.plugin_request_timeout_ms",
                    self.nri.plugin_request_timeout_ms,
                ),
            ] {
                if v == 0 {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: "must be at least 1".into(),
                    });
                }
            }
        }
        if self.registry.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "registry.max_concurrent_downloads",
                reason: "must be at least 1".into(),
            });
        }
        if self.registry.progress_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "registry.progress_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self
            .streaming
            .address
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(ConfigError::Invalid {
                key: "streaming.address",
                reason: format!("{:?} is not an ip:port", self.streaming.address),
            });
        }
        let (cert, key) = (&self.streaming.tls_cert, &self.streaming.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "streaming.tls_key",
                reason: "tls_cert and tls_key are set together or not at all".into(),
            });
        }
        for (k, p) in [("streaming.tls_cert", cert), ("streaming.tls_key", key)] {
            if !p.as_os_str().is_empty() && !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    key: k,
                    reason: format!("{} is not an absolute path", p.display()),
                });
            }
        }
        if !self.metrics.address.is_empty()
            && self
                .metrics
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError::Invalid {
                key: "metrics.address",
                reason: format!(
                    "{:?} is not an ip:port (empty turns the endpoint off)",
                    self.metrics.address
                ),
            });
        }
        if self.streaming.token_ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "streaming.token_ttl_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: "must not be empty".into(),
            });
        }
        self.validate_runtimes()
    }

    fn validate_runtimes(&self) -> Result<(), ConfigError> {
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(ConfigError::Invalid {
                key: "default_runtime",
                reason: format!(
                    "{:?} names no [runtimes.<handler>] entry (known: {})",
                    self.default_runtime,
                    self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        for (name, h) in &self.runtimes {
            // Keys are dynamic, so the message names the handler and the field.
            let bad = |field: &'static str, reason: String| ConfigError::Invalid {
                key: field,
                reason: format!("[runtimes.{name}] {reason}"),
            };
            if !valid_handler_name(name) {
                return Err(bad(
                    "runtimes",
                    "is not a valid handler name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit, like a RuntimeClass handler)".into(),
                ));
            }
            if h.runtime_type != RUNC_V2_RUNTIME_TYPE && h.runtime_type != CRID_SHIM_RUNTIME_TYPE {
                return Err(bad(
                    "runtimes.<handler>.runtime_type",
                    format!(
                        "runtime_type {:?} is not supported (only {RUNC_V2_RUNTIME_TYPE:?} or {CRID_SHIM_RUNTIME_TYPE:?})",
                        h.runtime_type
                    ),
                ));
            }
            let binary = Path::new(&h.binary_name);
            if h.binary_name.is_empty()
                || (h.binary_name.contains('/') && !binary.is_absolute())
                || h.binary_name.chars().any(char::is_whitespace)
            {
                return Err(bad(
                    "runtimes.<handler>.binary_name",
                    format!(
                        "binary_name {:?} must be a program name (runc, crun) or an absolute path",
                        h.binary_name
                    ),
                ));
            }
            if !h.root.as_os_str().is_empty() && !h.root.is_absolute() {
                return Err(bad(
                    "runtimes.<handler>.root",
                    format!("root {} is not an absolute path", h.root.display()),
                ));
            }
            if h.systemd_cgroup && self.cgroup_driver != CgroupDriver::Systemd {
                return Err(bad(
                    "runtimes.<handler>.systemd_cgroup",
                    "systemd_cgroup = true needs cgroup_driver = \"systemd\" (runc and crid must agree on who manages cgroups)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The handler a RunPodSandbox `runtime_handler` names (empty = the
    /// default), with its resolved name; `None` for an unknown one.
    pub fn runtime_handler(&self, name: &str) -> Option<(&str, &RuntimeHandlerConfig)> {
        let name = if name.is_empty() {
            self.default_runtime.as_str()
        } else {
            name
        };
        self.runtimes
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// A RuntimeClass handler is a DNS label (Kubernetes validates it so).
fn valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// containerd's namespace rule: `^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`,
/// at most 76 bytes.
fn valid_containerd_namespace(ns: &str) -> bool {
    if ns.is_empty() || ns.len() > 76 {
        return false;
    }
    let mut prev_sep = true;
    for b in ns.bytes() {
        let sep = matches!(b, b'.' | b'_' | b'-');
        if sep && prev_sep {
            return false;
        }
        if !sep && !b.is_ascii_alphanumeric() {
            return false;
        }
        prev_sep = sep;
    }
    !prev_sep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn default_file_round_trips() {
        let text = Config::default_toml();
        assert!(text.contains("[containerd]"), "{text}");
        assert_eq!(parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn nri_section_parses_and_bad_values_are_refused() {
        let cfg = parse(
            "[nri]\nenable = true\nsocket_path = \"/run/x/nri.sock\"\nplugin_request_timeout_ms = 500\n",
        )
        .unwrap();
        assert!(cfg.nri.enable);
        assert_eq!(cfg.nri.socket_path, PathBuf::from("/run/x/nri.sock"));
        assert_eq!(cfg.nri.plugin_request_timeout_ms, 500);
        // Unset keys keep containerd's defaults.
        assert_eq!(cfg.nri.plugin_registration_timeout_ms, 5000);
        assert_eq!(cfg.nri.plugin_path, PathBuf::from("/opt/nri/plugins"));
        for bad in [
            "[nri]\nenable = true\nsocket_path = \"rel.sock\"\n",
            "[nri]\nenable = true\nplugin_request_timeout_ms = 0\n",
            "[nri]\nenable = true\nplugin_registration_timeout_ms = 0\n",
            "[nri]\nenable = true\nbogus = 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // Off, the values are not looked at.
        assert!(parse("[nri]\nplugin_request_timeout_ms = 0\n").is_ok());
    }

    #[test]
    fn overrides_apply() {
        let cfg = parse(
            "socket = \"/tmp/x.sock\"\n[containerd]\nnamespace = \"other\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(cfg.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(cfg.containerd.namespace, "other");
        assert_eq!(cfg.containerd.snapshotter, "overlayfs");
        assert_eq!(cfg.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[containerd]\nadress = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("adress"), "{err}");
        let err = parse("bogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("cgroup_driver = \"openrc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("openrc"), "{err}");
        // systemd parses (whether it answers is checked when crid starts),
        // and allows systemd_cgroup handlers.
        let c =
            parse("cgroup_driver = \"systemd\"\n[runtimes.x]\nsystemd_cgroup = true\n").unwrap();
        assert_eq!(c.cgroup_driver, CgroupDriver::Systemd);
        let err = parse("[containerd]\nnamespace = \"Bad/NS\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("containerd.namespace"), "{err}");
        let err = parse("state_dir = \"relative\"\n").unwrap_err().to_string();
        assert!(err.contains("state_dir"), "{err}");
        let err = parse("[cni]\nbin_dirs = [\"/ok\", \"rel\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cni.bin_dirs"), "{err}");
        let err = parse("[sandbox]\nhelper_path = \"rel\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sandbox.helper_path"), "{err}");
        let err = parse("[sandbox]\nsetup_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sandbox.setup_timeout_secs"), "{err}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_named_file_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert_eq!(Config::load(&p, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(&p, true),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn registry_section() {
        let cfg = parse("[registry]\nconfig_path = \"/x/certs.d\"\nmax_concurrent_downloads = 8\n")
            .unwrap();
        assert_eq!(cfg.registry.config_path, PathBuf::from("/x/certs.d"));
        assert_eq!(cfg.registry.max_concurrent_downloads, 8);
        assert_eq!(cfg.registry.progress_timeout_secs, 60);
        assert!(Config::default_toml().contains("[registry]"));
        for (text, key) in [
            (
                "[registry]\nmax_concurrent_downloads = 0\n",
                "registry.max_concurrent_downloads",
            ),
            (
                "[registry]\nprogress_timeout_secs = 0\n",
                "registry.progress_timeout_secs",
            ),
            (
                "[registry]\nconfig_path = \"rel\"\n",
                "registry.config_path",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = parse("[registry]\nmirrors = 1\n").unwrap_err().to_string();
        assert!(err.contains("mirrors"), "{err}");
    }

    #[test]
    fn streaming_section() {
        let d = Config::default();
        assert_eq!(d.streaming.address, "127.0.0.1:0");
        assert_eq!(d.streaming.token_ttl_secs, 60);
        assert!(!d.streaming.tls());
        assert!(Config::default_toml().contains("[streaming]"));
        let cfg = parse(
            "[streaming]\naddress = \"0.0.0.0:10010\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\ntoken_ttl_secs = 2\n",
        )
        .unwrap();
        assert!(cfg.streaming.tls());
        assert_eq!(cfg.streaming.token_ttl_secs, 2);
        for (text, key) in [
            (
                "[streaming]\naddress = \"localhost\"\n",
                "streaming.address",
            ),
            ("[streaming]\ntls_cert = \"/c.pem\"\n", "streaming.tls_key"),
            (
                "[streaming]\ntls_cert = \"c.pem\"\ntls_key = \"/k\"\n",
                "streaming.tls_cert",
            ),
            (
                "[streaming]\ntoken_ttl_secs = 0\n",
                "streaming.token_ttl_secs",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn metrics_endpoint_is_off_by_default_and_its_address_is_checked() {
        let d = Config::default();
        assert_eq!(d.metrics.address, "");
        assert!(Config::default_toml().contains("[metrics]"));
        let cfg = parse("[metrics]\naddress = \"127.0.0.1:9090\"\n").unwrap();
        assert_eq!(cfg.metrics.address, "127.0.0.1:9090");
        for text in [
            "[metrics]\naddress = \"localhost:9090\"\n",
            "[metrics]\naddress = \"9090\"\n",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("metrics.address"), "{text}: {err}");
        }
        let err = parse("[metrics]\nport = 1\n").unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn runtimes_default_to_runc_and_merge_with_the_file() {
        let cfg = Config::default();
        let (name, h) = cfg.runtime_handler("").unwrap();
        assert_eq!(name, "runc");
        assert_eq!(h.binary_name, "runc");
        assert_eq!(h.runtime_type, "io.containerd.crid.v1");
        assert_eq!(cfg.runtime_handler("runc").unwrap().0, "runc");
        let (name, v2) = cfg.runtime_handler("runc-v2").unwrap();
        assert_eq!(name, "runc-v2");
        assert_eq!(v2.runtime_type, "io.containerd.runc.v2");
        assert_eq!(v2.binary_name, "runc");
        assert_eq!(cfg.runtimes.len(), 2);
        assert!(cfg.runtime_handler("kata").is_none());
        let text = Config::default_toml();
        assert!(text.contains("[runtimes.runc]"), "{text}");
        assert!(text.contains("[runtimes.runc-v2]"), "{text}");
        assert!(
            text.contains("runtime_type = \"io.containerd.crid.v1\""),
            "{text}"
        );
        assert!(
            text.contains("runtime_type = \"io.containerd.runc.v2\""),
            "{text}"
        );
        // The printed defaults parse back to the same config.
        assert_eq!(parse(&text).unwrap(), cfg);

        let cfg = parse(
            "[runtimes.crun]\nruntime_type = \"io.containerd.runc.v2\"\nbinary_name = \"/usr/bin/crun\"\nroot = \"/run/crun\"\n",
        )
        .unwrap();
        // runc and runc-v2 stay, crun is added.
        assert_eq!(cfg.runtimes.len(), 3);
        let (_, crun) = cfg.runtime_handler("crun").unwrap();
        assert_eq!(crun.binary_name, "/usr/bin/crun");
        assert_eq!(crun.root, PathBuf::from("/run/crun"));
        assert_eq!(cfg.runtime_handler("").unwrap().0, "runc");

        // A handler that leaves runtime_type out gets the default's type.
        let cfg =
            parse("default_runtime = \"crun\"\n[runtimes.crun]\nbinary_name = \"crun\"\n").unwrap();
        assert_eq!(cfg.runtime_handler("").unwrap().0, "crun");
        assert_eq!(
            cfg.runtime_handler("").unwrap().1.runtime_type,
            "io.containerd.crid.v1"
        );
        // A handler table round-trips through the printed form.
        let mut with = Config::default();
        with.runtimes.insert(
            "fast".into(),
            RuntimeHandlerConfig {
                binary_name: "crun".into(),
                ..Default::default()
            },
        );
        let text = toml::to_string_pretty(&with).unwrap();
        assert_eq!(parse(&text).unwrap(), with);
    }

    #[test]
    fn the_helper_shim_runtime_type_is_accepted() {
        let c = parse(
            "default_runtime = \"crid\"\n[runtimes.crid]\nruntime_type = \"io.containerd.crid.v1\"\n",
        )
        .unwrap();
        assert_eq!(
            c.runtime_handler("").unwrap().1.runtime_type,
            CRID_SHIM_RUNTIME_TYPE
        );
        assert_eq!(
            c.runtime_handler("runc").unwrap().1.runtime_type,
            CRID_SHIM_RUNTIME_TYPE
        );
        assert_eq!(
            c.runtime_handler("runc-v2").unwrap().1.runtime_type,
            RUNC_V2_RUNTIME_TYPE
        );
    }

    #[test]
    fn a_file_can_go_back_to_the_runc_v2_shim() {
        // The default handler by name, or a redefined `runc`.
        let c = parse("default_runtime = \"runc-v2\"\n").unwrap();
        assert_eq!(c.runtime_handler("").unwrap().0, "runc-v2");
        assert_eq!(
            c.runtime_handler("").unwrap().1.runtime_type,
            RUNC_V2_RUNTIME_TYPE
        );
        let c = parse("[runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n").unwrap();
        assert_eq!(
            c.runtime_handler("").unwrap().1.runtime_type,
            RUNC_V2_RUNTIME_TYPE
        );
        // A redefined runc-v2 is kept as written, not overwritten.
        let c = parse("[runtimes.runc-v2]\nruntime_type = \"io.containerd.runc.v2\"\nbinary_name = \"/opt/runc\"\n")
            .unwrap();
        assert_eq!(
            c.runtime_handler("runc-v2").unwrap().1.binary_name,
            "/opt/runc"
        );
        assert_eq!(
            c.runtime_handler("runc").unwrap().1.runtime_type,
            CRID_SHIM_RUNTIME_TYPE
        );
    }

    #[test]
    fn bad_runtimes_are_named() {
        for (text, key, detail) in [
            ("default_runtime = \"kata\"\n", "default_runtime", "kata"),
            (
                "[runtimes.kata]\nruntime_type = \"io.containerd.kata.v2\"\n",
                "runtimes.<handler>.runtime_type",
                "[runtimes.kata]",
            ),
            (
                "[runtimes.x]\nbinary_name = \"\"\n",
                "runtimes.<handler>.binary_name",
                "[runtimes.x]",
            ),
            (
                "[runtimes.x]\nbinary_name = \"bin/runc\"\n",
                "runtimes.<handler>.binary_name",
                "bin/runc",
            ),
            (
                "[runtimes.x]\nroot = \"rel\"\n",
                "runtimes.<handler>.root",
                "[runtimes.x]",
            ),
            (
                "[runtimes.x]\nsystemd_cgroup = true\n",
                "runtimes.<handler>.systemd_cgroup",
                "[runtimes.x]",
            ),
            ("[runtimes.Bad_Name]\n", "runtimes", "Bad_Name"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains(detail), "{text}: {err}");
        }
        let err = parse("[runtimes.x]\nbinary = \"runc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("binary"), "{err}");
    }

    #[test]
    fn handler_names() {
        for ok in ["runc", "crun", "kata-qemu", "x1"] {
            assert!(valid_handler_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_handler_name(bad), "{bad}");
        }
    }

    #[test]
    fn namespace_rule() {
        for ok in ["crid", "k8s.io", "a-b_c.d", "x1"] {
            assert!(valid_containerd_namespace(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b"] {
            assert!(!valid_containerd_namespace(bad), "{bad}");
        }
    }

    mod prop {
        //! Random and damaged config files (issue 14): the parser never
        //! panics; every rejection names the file or the key.
        use super::super::*;
        use proptest::prelude::*;

        fn named(e: &ConfigError) -> bool {
            let m = e.to_string();
            m.contains("crid.toml") || m.contains("config key")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn any_text_parses_or_is_refused_by_name(text in any::<String>()) {
                if let Err(e) = Config::parse(&text, Path::new("/etc/crid/crid.toml")) {
                    prop_assert!(named(&e), "{e}");
                }
            }

            /// The default file with one line's value replaced by something
            /// hostile, or cut short anywhere (a torn write).
            #[test]
            fn a_damaged_default_file_parses_or_is_refused_by_name(
                line in any::<prop::sample::Index>(),
                value in prop_oneof![
                    Just("\"\"".to_string()),
                    Just("-1".to_string()),
                    Just("18446744073709551615".to_string()),
                    Just("\"../../etc\"".to_string()),
                    Just("\"/\"".to_string()),
                    Just("[]".to_string()),
                    Just("{}".to_string()),
                    "\"[ -~]{0,40}\"",
                    any::<i64>().prop_map(|n| n.to_string()),
                ],
                cut in any::<prop::sample::Index>(),
                torn in any::<bool>(),
            ) {
                let text = Config::default_toml();
                let damaged = if torn {
                    let mut at = cut.index(text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text[..at].to_string()
                } else {
                    let lines: Vec<&str> = text.lines().collect();
                    let k = line.index(lines.len());
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| match (i == k, l.split_once(" = ")) {
                            (true, Some((key, _))) => format!("{key} = {value}"),
                            _ => l.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                if let Err(e) = Config::parse(&damaged, Path::new("/etc/crid/crid.toml")) {
                    prop_assert!(named(&e), "{e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod native_exec_tests {
    use super::*;

    #[test]
    fn native_exec_is_on_by_default_and_can_be_turned_off() {
        assert!(Config::default().sandbox.native_exec);
        let c: Config = toml::from_str("[sandbox]\nnative_exec = false\n").unwrap();
        assert!(!c.sandbox.native_exec);
    }
}
