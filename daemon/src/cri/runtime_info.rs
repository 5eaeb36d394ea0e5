//! Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the runtime is
//! and whether it is ready.

use super::Crid;
use crate::error::Result;
use crid_common::cni_config;
use crid_common::config::CgroupDriver;
use crid_proto::cri;
use std::collections::HashMap;

/// Runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "crid";
/// CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

/// `Version`.
pub fn version() -> cri::VersionResponse {
    cri::VersionResponse {
        // The kubelet requires this to be "0.1.0" in the CRI version field.
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}

/// `Status`: RuntimeReady follows containerd, NetworkReady the CNI config.
pub async fn status(crid: &Crid, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
    let containerd = crid.containerd.version().await;
    let runtime = match &containerd {
        Ok(_) => condition("RuntimeReady", true, "", ""),
        Err(e) => condition(
            "RuntimeReady",
            false,
            "ContainerdNotReady",
            &format!(
                "containerd at {} is not answering: {e}",
                crid.config.containerd.address.display()
            ),
        ),
    };
    let cni = cni_config::load_default(&crid.config.cni.conf_dir, &crid.config.cni.bin_dirs);
    let network = match &cni {
        Ok(_) => condition("NetworkReady", true, "", ""),
        Err(e) => condition(
            "NetworkReady",
            false,
            "NetworkPluginNotReady",
            &format!("cni config load failed: {e}"),
        ),
    };
    // Only asked once containerd answers (the probe needs its snapshotter).
    let userns = match &containerd {
        Ok(_) => crid.userns.check(&crid.containerd, &crid.config).await,
        Err(_) => Err("containerd is not answering".to_string()),
    };
    let mut info = HashMap::new();
    if req.verbose {
        let userns_info = match &userns {
            Ok(()) => serde_json::json!({"supported": true}),
            Err(why) => serde_json::json!({"supported": false, "reason": why}),
        };
        info.insert("userNamespaces".to_string(), userns_info.to_string());
        info.insert(
            "config".to_string(),
            serde_json::to_string(&crid.config)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?,
        );
        let containerd_info = match &containerd {
            Ok(v) => serde_json::json!({"version": v.version, "revision": v.revision}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        info.insert("containerd".to_string(), containerd_info.to_string());
        let cni_info = match &cni {
            Ok(list) => serde_json::json!({
                "file": list.file,
                "name": list.name,
                "cniVersion": list.cni_version,
                "plugins": list.plugin_types(),
            }),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        info.insert("cni".to_string(), cni_info.to_string());
        // What `crictl info` and tools read from containerd's CRI plugin.
        info.insert(
            "cniconfig".to_string(),
            cni_config_info(&crid.config, cni.as_ref().ok()).to_string(),
        );
        let load_status = match &cni {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("cni config load failed: {e}"),
        };
        info.insert(
            "lastCNILoadStatus".to_string(),
            serde_json::Value::String(load_status.clone()).to_string(),
        );
        info.insert(
            "lastCNILoadStatus.default".to_string(),
            serde_json::Value::String(load_status).to_string(),
        );
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        // The runtime handlers reported are the ones RunPodSandbox accepts.
        // User namespaces are crid's work (the pod root, idmapped rootfs),
        // the same for every runc-compatible handler.
        runtime_handlers: crate::runtime_handler::names(&crid.config)
            .into_iter()
            .map(|name| {
                let f = crate::runtime_handler::features_of(
                    &crid.config,
                    &crid.handler_features,
                    &name,
                );
                cri::RuntimeHandler {
                    name,
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: f.recursive_read_only,
                        user_namespaces: userns.is_ok(),
                    }),
                }
            })
            .collect(),
        features: Some(cri::RuntimeFeatures {
            // Strict/Merge are applied (spec::user) and ContainerStatus.user reports
            // the resulting identity.
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}

/// `cniconfig` as containerd's CRI plugin reports it (go-cni's config: the
/// plugin dirs, the conf dir, and the network in use with its source text);
/// `Networks` is empty while no usable config is found.
fn cni_config_info(
    config: &crid_common::config::Config,
    list: Option<&cni_config::NetworkConfigList>,
) -> serde_json::Value {
    let networks: Vec<serde_json::Value> = list
        .map(|l| {
            let source = std::fs::read_to_string(&l.file).unwrap_or_default();
            let plugins: Vec<serde_json::Value> = l
                .plugins
                .iter()
                .map(|p| serde_json::json!({"Network": p, "Source": p.to_string()}))
                .collect();
            serde_json::json!({
                "Config": {
                    "Name": l.name,
                    "CNIVersion": l.cni_version,
                    "Plugins": plugins,
                    "Source": source,
                },
                "IFName": "eth0",
            })
        })
        .into_iter()
        .collect();
    serde_json::json!({
        "PluginDirs": config.cni.bin_dirs,
        "PluginConfDir": config.cni.conf_dir,
        "PluginMaxConfNum": 1,
        "Prefix": "eth",
        "Networks": networks,
    })
}

/// `RuntimeConfig`: the cgroup driver the kubelet must use.
pub fn runtime_config(crid: &Crid) -> cri::RuntimeConfigResponse {
    let driver = match crid.config.cgroup_driver {
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
    };
    cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}

/// `UpdateRuntimeConfig`: crid has no CNI config template, so like
/// containerd's CRI plugin without one, the pod CIDR is only logged.
pub fn update_runtime_config(
    req: cri::UpdateRuntimeConfigRequest,
) -> cri::UpdateRuntimeConfigResponse {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    tracing::info!(pod_cidr = %cidr, "runtime config update (no CNI template configured; nothing to render)");
    cri::UpdateRuntimeConfigResponse {}
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_crid_v1() {
        let v = version();
        assert_eq!(v.runtime_name, "crid");
        assert_eq!(v.runtime_api_version, "v1");
        assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    }
}
