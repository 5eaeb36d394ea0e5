//! Runtime handlers (`[runtimes.<handler>]` in the config; the `handler` of a
//! Kubernetes RuntimeClass): which handlers RunPodSandbox accepts, which
//! Status reports, and the runc shim options a pod's containers get.
//!
//! Like containerd's CRI plugin, an empty handler means `default_runtime`, an
//! unknown one is refused at RunPodSandbox ("no runtime for "x" is
//! configured"; containerd answers Unknown, crid InvalidArgument since the
//! request names something that does not exist here), and the handler is
//! resolved again at CreateContainer from the sandbox's record.

use crate::error::{Error, Result};
use crid_common::config::{Config, RuntimeHandlerConfig};
use std::collections::BTreeMap;
use std::process::Command;

/// What a handler's OCI runtime can do, as its `features` command says
/// (runc >= 1.1; the OCI runtime-spec "features" document) and the kernel
/// allows. Reported per handler by `Status` and checked by CreateContainer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    /// The runtime knows the `rro` mount option and the kernel has
    /// mount_setattr (5.12+): CRI `Mount.recursive_read_only` can be honoured.
    pub recursive_read_only: bool,
}

/// Features from the JSON `<runtime> features` prints and whether the kernel
/// can apply recursive mount attributes.
pub fn parse_features(features_json: &[u8], kernel_has_mount_setattr: bool) -> HandlerFeatures {
    let doc: serde_json::Value = serde_json::from_slice(features_json).unwrap_or_default();
    let rro = doc
        .get("mountOptions")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|opts| opts.iter().any(|o| o.as_str() == Some("rro")));
    HandlerFeatures {
        recursive_read_only: rro && kernel_has_mount_setattr,
    }
}

/// True for a kernel release (`uname -r`) of 5.12 or later, where
/// mount_setattr(2) exists.
pub fn kernel_has_mount_setattr(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 12)
}

/// Asks every configured handler's runtime for its features, once at start
/// (like containerd's CRI plugin). A runtime that cannot answer gets none.
pub fn probe_features(config: &Config) -> BTreeMap<String, HandlerFeatures> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let kernel_ok = kernel_has_mount_setattr(&release);
    config
        .runtimes
        .iter()
        .map(|(name, handler)| {
            let features = match Command::new(&handler.binary_name).arg("features").output() {
                Ok(out) if out.status.success() => parse_features(&out.stdout, kernel_ok),
                Ok(out) => {
                    tracing::warn!(handler = %name, binary = %handler.binary_name,
                        status = %out.status, "runtime has no features command; reporting no optional features");
                    HandlerFeatures::default()
                }
                Err(e) => {
                    tracing::warn!(handler = %name, binary = %handler.binary_name,
                        "cannot run the runtime's features command: {e}");
                    HandlerFeatures::default()
                }
            };
            (name.clone(), features)
        })
        .collect()
}

/// The features of the handler `name` resolves to (empty = the default).
pub fn features_of(
    config: &Config,
    features: &BTreeMap<String, HandlerFeatures>,
    name: &str,
) -> HandlerFeatures {
    config
        .runtime_handler(name)
        .and_then(|(resolved, _)| features.get(resolved).copied())
        .unwrap_or_default()
}

/// The handler `name` (empty = the default) resolves to, with its name.
pub fn resolve<'a>(config: &'a Config, name: &str) -> Result<(&'a str, &'a RuntimeHandlerConfig)> {
    config.runtime_handler(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "no runtime for {name:?} is configured (known: {})",
            names(config)
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The handler names a kubelet may send: "" (the default) and every
/// configured one, in name order (Status `runtime_handlers`).
pub fn names(config: &Config) -> Vec<String> {
    std::iter::once(String::new())
        .chain(config.runtimes.keys().cloned())
        .collect()
}

/// The runc shim options for a container of a pod run with `handler`: the
/// OCI runtime binary and root from the handler, the shim's cgroup leaf,
/// systemd cgroups with the systemd driver.
pub fn runc_options(
    handler: &RuntimeHandlerConfig,
    shim_cgroup: &str,
    systemd_driver: bool,
) -> prost_types::Any {
    crid_proto::runc::Options {
        binary_name: handler.binary_name.clone(),
        root: handler.root.display().to_string(),
        shim_cgroup: shim_cgroup.to_string(),
        systemd_cgroup: handler.systemd_cgroup || systemd_driver,
        ..Default::default()
    }
    .to_any()
}

/// The runc shim options as containerd's CRI plugin shows them in verbose
/// ContainerStatus / PodSandboxStatus (`info.runtimeOptions`): the Go JSON
/// names, empty values left out as Go's `omitempty` does.
pub fn runc_options_json(handler: &RuntimeHandlerConfig, shim_cgroup: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            m.insert(k.into(), serde_json::Value::String(v));
        }
    };
    put("binary_name", handler.binary_name.clone());
    put("root", handler.root.display().to_string());
    put("shim_cgroup", shim_cgroup.to_string());
    if handler.systemd_cgroup {
        m.insert("systemd_cgroup".into(), serde_json::Value::Bool(true));
    }
    serde_json::Value::Object(m)
}

/// The containerd runtime type of a pod's containers as verbose status
/// shows it (`info.runtimeType`): taken from the record, so it stays true
/// for a pod made before a config change.
pub fn pod_runtime_type(sb: &crate::sandbox::record::SandboxRecord) -> &'static str {
    if sb.shim.is_some() {
        crid_common::config::CRID_SHIM_RUNTIME_TYPE
    } else {
        crid_common::config::RUNC_V2_RUNTIME_TYPE
    }
}

/// The runtime options of a pod's containers (its handler, its shim cgroup
/// leaf, none when the helper is the shim: it already is in the pod's
/// cgroup); None when the pod's handler is no longer configured.
pub fn pod_runtime_options(
    config: &crid_common::config::Config,
    sb: &crate::sandbox::record::SandboxRecord,
) -> Option<serde_json::Value> {
    let (_, handler) = resolve(config, &sb.runtime_handler).ok()?;
    let systemd = config.cgroup_driver == crid_common::config::CgroupDriver::Systemd;
    let shim_cgroup = if sb.systemd.is_some() || sb.shim.is_some() {
        String::new()
    } else {
        let pod = crate::cri::container::pod_cgroup(sb).ok()?;
        format!("{pod}/{}", crate::container::ctrd::SHIM_CGROUP_LEAF)
    };
    let mut v = runc_options_json(handler, &shim_cgroup);
    if systemd {
        v["systemd_cgroup"] = serde_json::Value::Bool(true);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::path::PathBuf;

    fn config() -> Config {
        let mut c = Config::default();
        c.runtimes.insert(
            "crun".into(),
            RuntimeHandlerConfig {
                binary_name: "/usr/bin/crun".into(),
                root: PathBuf::from("/run/crun"),
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn rro_needs_the_runtime_option_and_the_kernel() {
        let json = br#"{"ociVersionMin":"1.0.0","mountOptions":["bind","rro","ro"]}"#;
        assert!(parse_features(json, true).recursive_read_only);
        assert!(!parse_features(json, false).recursive_read_only);
        let old = br#"{"mountOptions":["bind","ro"]}"#;
        assert!(!parse_features(old, true).recursive_read_only);
        assert!(!parse_features(b"not json", true).recursive_read_only);
        assert!(kernel_has_mount_setattr("6.18.44-fc-v1147"));
        assert!(kernel_has_mount_setattr("5.12.0"));
        assert!(!kernel_has_mount_setattr("5.11.22-generic"));
        assert!(!kernel_has_mount_setattr(""));
    }

    #[test]
    fn features_follow_the_resolved_handler() {
        let c = config();
        let f = BTreeMap::from([(
            "runc".to_string(),
            HandlerFeatures {
                recursive_read_only: true,
            },
        )]);
        assert!(features_of(&c, &f, "").recursive_read_only);
        assert!(features_of(&c, &f, "runc").recursive_read_only);
        assert!(!features_of(&c, &f, "crun").recursive_read_only);
        assert!(!features_of(&c, &f, "kata").recursive_read_only);
    }

    #[test]
    fn empty_and_runc_resolve_to_runc() {
        let c = config();
        assert_eq!(resolve(&c, "").unwrap().0, "runc");
        assert_eq!(resolve(&c, "runc").unwrap().1.binary_name, "runc");
        assert_eq!(resolve(&c, "crun").unwrap().1.binary_name, "/usr/bin/crun");
    }

    #[test]
    fn unknown_handler_is_invalid_argument_naming_the_known_ones() {
        let err = resolve(&config(), "kata").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("no runtime for \"kata\"") && m.contains("\"crun\"")),
            "{err:?}"
        );
    }

    #[test]
    fn names_list_the_default_first() {
        assert_eq!(names(&config()), vec!["", "crun", "runc", "runc-v2"]);
    }

    #[test]
    fn options_carry_binary_root_and_shim_cgroup() {
        let c = config();
        let any = runc_options(resolve(&c, "crun").unwrap().1, "/crid/p/crid-shim", false);
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let o = crid_proto::runc::Options::decode(any.value.as_slice()).unwrap();
        assert_eq!(o.binary_name, "/usr/bin/crun");
        assert_eq!(o.root, "/run/crun");
        assert_eq!(o.shim_cgroup, "/crid/p/crid-shim");
        assert!(!o.systemd_cgroup);
        let o = crid_proto::runc::Options::decode(
            runc_options(resolve(&c, "").unwrap().1, "/x", false)
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!((o.binary_name.as_str(), o.root.as_str()), ("runc", ""));
    }
}
