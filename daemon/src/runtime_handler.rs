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
/// OCI runtime binary and root from the handler, the shim's cgroup leaf.
pub fn runc_options(handler: &RuntimeHandlerConfig, shim_cgroup: &str) -> prost_types::Any {
    crid_proto::runc::Options {
        binary_name: handler.binary_name.clone(),
        root: handler.root.display().to_string(),
        shim_cgroup: shim_cgroup.to_string(),
        systemd_cgroup: handler.systemd_cgroup,
        ..Default::default()
    }
    .to_any()
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
        assert_eq!(names(&config()), vec!["", "crun", "runc"]);
    }

    #[test]
    fn options_carry_binary_root_and_shim_cgroup() {
        let c = config();
        let any = runc_options(resolve(&c, "crun").unwrap().1, "/crid/p/crid-shim");
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let o = crid_proto::runc::Options::decode(any.value.as_slice()).unwrap();
        assert_eq!(o.binary_name, "/usr/bin/crun");
        assert_eq!(o.root, "/run/crun");
        assert_eq!(o.shim_cgroup, "/crid/p/crid-shim");
        assert!(!o.systemd_cgroup);
        let o = crid_proto::runc::Options::decode(
            runc_options(resolve(&c, "").unwrap().1, "/x")
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!((o.binary_name.as_str(), o.root.as_str()), ("runc", ""));
    }
}
