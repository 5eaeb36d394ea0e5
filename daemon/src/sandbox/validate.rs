//! RunPodSandbox input checks: everything that would become a path, a name
//! or a kernel setting is checked before any work starts.

use crate::error::{Error, Result};
use crid_proto::cri;

/// CRI `NamespaceMode::Node`.
pub const MODE_NODE: i32 = 2;

/// Checks a sandbox config and returns its metadata.
pub fn config(
    c: &cri::PodSandboxConfig,
    handler: &str,
    conf: &crid_common::config::Config,
) -> Result<cri::PodSandboxMetadata> {
    let md = c
        .metadata
        .clone()
        .ok_or_else(|| Error::InvalidArgument("sandbox config has no metadata".into()))?;
    for (what, v) in [
        ("name", &md.name),
        ("namespace", &md.namespace),
        ("uid", &md.uid),
    ] {
        if v.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "sandbox metadata {what} is empty"
            )));
        }
    }
    crid_common::ids::check_component("sandbox name", &md.name)?;
    crid_common::ids::check_component("sandbox namespace", &md.namespace)?;
    crid_common::ids::check_component("sandbox uid", &md.uid)?;
    crate::runtime_handler::resolve(conf, handler)?;
    log_directory(&c.log_directory)?;
    if !c.hostname.is_empty()
        && (c.hostname.len() > 64
            || !c
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(Error::InvalidArgument(format!(
            "hostname {:?} is not valid",
            c.hostname
        )));
    }
    let modes = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let sysctls = c
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    for (k, v) in &sysctls {
        sysctl(k, v, modes.network == MODE_NODE, modes.ipc == MODE_NODE)?;
    }
    crate::userns::pod_userns(&modes)?;
    for pm in &c.port_mappings {
        if !(0..=65535).contains(&pm.host_port) || !(1..=65535).contains(&pm.container_port) {
            return Err(Error::InvalidArgument(format!(
                "port mapping {pm:?} is out of range"
            )));
        }
    }
    Ok(md)
}

/// log_directory: empty, or absolute without `..`.
pub fn log_directory(d: &str) -> Result<()> {
    if d.is_empty() {
        return Ok(());
    }
    let p = std::path::Path::new(d);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        || d.contains('\0')
    {
        return Err(Error::InvalidArgument(format!(
            "log_directory {d:?} must be an absolute path without .."
        )));
    }
    Ok(())
}

/// A pod sysctl must be namespaced, and its namespace must be the pod's own.
pub fn sysctl(key: &str, value: &str, host_net: bool, host_ipc: bool) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "sysctl {key}={value:?}: {why}"
        )))
    };
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || key.split('.').any(|c| c.is_empty() || c == "..")
    {
        return bad("not a sysctl name");
    }
    if value.contains('\n') || value.contains('\0') {
        return bad("value holds a newline or NUL");
    }
    let ipc = key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.");
    if key.starts_with("net.") {
        if host_net {
            return bad("net.* sysctls are not allowed for a host-network pod");
        }
        return Ok(());
    }
    if ipc {
        if host_ipc {
            return bad("IPC sysctls are not allowed for a host-IPC pod");
        }
        return Ok(());
    }
    bad("not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "n".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_handler_and_paths() {
        assert!(config(&cfg(), "", &Default::default()).is_ok());
        assert!(config(&cfg(), "runc", &Default::default()).is_ok());
        assert!(config(&cfg(), "kata", &Default::default()).is_err());
        let mut c = cfg();
        c.metadata = None;
        assert!(config(&c, "", &Default::default()).is_err());
        let mut c = cfg();
        c.metadata.as_mut().unwrap().uid.clear();
        assert!(config(&c, "", &Default::default()).is_err());
        let mut c = cfg();
        c.metadata.as_mut().unwrap().name = "../x".into();
        assert!(config(&c, "", &Default::default()).is_err());
        for bad in ["rel/dir", "/var/log/../../etc"] {
            let mut c = cfg();
            c.log_directory = bad.into();
            assert!(config(&c, "", &Default::default()).is_err(), "{bad}");
        }
        let mut c = cfg();
        c.log_directory = "/var/log/pods/x".into();
        assert!(config(&c, "", &Default::default()).is_ok());
    }

    #[test]
    fn sysctls() {
        assert!(sysctl("net.ipv4.ip_forward", "1", false, false).is_ok());
        assert!(sysctl("kernel.shmmax", "1", false, false).is_ok());
        assert!(sysctl("kernel.sem", "1 2 3 4", false, false).is_ok());
        assert!(sysctl("fs.mqueue.msg_max", "10", false, false).is_ok());
        assert!(sysctl("net.ipv4.ip_forward", "1", true, false).is_err());
        assert!(sysctl("kernel.shmmax", "1", false, true).is_err());
        for bad in [
            "kernel.hostname",
            "vm.swappiness",
            "net/../../x",
            "net..x",
            "",
        ] {
            assert!(sysctl(bad, "1", false, false).is_err(), "{bad}");
        }
    }
}
