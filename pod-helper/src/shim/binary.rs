//! `containerd-shim-crid-v1`: the shim command containerd runs for runtime
//! `io.containerd.crid.v1` (a link to `crid-pod-helper`, told apart by its
//! name). It starts nothing: `start` answers with the address of the pod's
//! running helper, found in the container's spec annotation that crid sets;
//! `delete` cleans up after a helper that died (containerd runs it for each
//! task of a shim whose connection broke).
//!
//! containerd runs it with the bundle as working directory and
//! `-namespace NS -address A -publish-binary B -id ID [-bundle P] start|delete`;
//! `start`'s whole output (stdout and stderr) is read as the address.

use super::runc::default_root;
use super::service::RUNTIME_FILE;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The spec annotation carrying the pod helper's shim address.
pub const ADDRESS_ANNOTATION: &str = "io.crid.shim.address";

/// The name containerd derives from `io.containerd.crid.v1`.
pub const BINARY_NAME: &str = "containerd-shim-crid-v1";

/// The command line containerd gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-namespace`.
    pub namespace: String,
    /// `-id`.
    pub id: String,
    /// `-bundle` (else the working directory).
    pub bundle: Option<PathBuf>,
    /// `start`, `delete`.
    pub action: String,
}

/// Parses Go-style flags (`-name value`, `-name=value`, bare `-debug`).
pub fn parse(args: &[String]) -> Args {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix('-') else {
            a.action = arg.clone();
            continue;
        };
        let flag = flag.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if matches!(name, "debug" | "v") {
            continue;
        }
        let value = inline.or_else(|| it.next().cloned()).unwrap_or_default();
        match name {
            "namespace" => a.namespace = value,
            "id" => a.id = value,
            "bundle" => a.bundle = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    a
}

/// The helper's address from a bundle's `config.json`.
pub fn address_of(config_json: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config_json).map_err(|e| format!("config.json: {e}"))?;
    v.get("annotations")
        .and_then(|a| a.get(ADDRESS_ANNOTATION))
        .and_then(|a| a.as_str())
        .filter(|a| a.starts_with("unix:///"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!("config.json has no {ADDRESS_ANNOTATION} annotation (not a crid container)")
        })
}

/// Runs the command; `args` without the program name.
pub fn main(args: &[String]) -> ExitCode {
    let a = parse(args);
    let bundle = a
        .bundle
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let r = match a.action.as_str() {
        "start" => start(&bundle),
        "delete" => delete(&a, &bundle),
        other => Err(format!("{BINARY_NAME}: unknown action {other:?}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{BINARY_NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(bundle: &Path) -> Result<(), String> {
    let config = std::fs::read(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let address = address_of(&config)?;
    let path = address.trim_start_matches("unix://");
    // A dead helper must fail the task's creation, not hang it.
    std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("the pod's helper does not answer at {path}: {e}"))?;
    // Where containerd finds the shim again after a restart.
    std::fs::write(bundle.join("address"), &address)
        .map_err(|e| format!("writing the address file: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn delete(a: &Args, bundle: &Path) -> Result<(), String> {
    let record: serde_json::Value = std::fs::read(bundle.join(RUNTIME_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let binary = record
        .get("binary")
        .and_then(|b| b.as_str())
        .unwrap_or("runc")
        .to_string();
    let root = record
        .get("root")
        .and_then(|r| r.as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| default_root(&a.namespace));
    let systemd_cgroup = record
        .get("systemd_cgroup")
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    // The container outlived its helper (or never started): end it.
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("--root").arg(&root);
    if systemd_cgroup {
        // runc then also stops the container's scope.
        cmd.arg("--systemd-cgroup");
    }
    let out = cmd.args(["delete", "--force", &a.id]).output();
    match out {
        Ok(o) if !o.status.success() => eprint!("{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => eprintln!("running {binary}: {e}"),
        Ok(_) => {}
    }
    super::mount::unmount(&bundle.join("rootfs"));
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let resp = DeleteResponse {
        pid,
        // As the runc shim: the process was killed.
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: super::events::timestamp(std::time::SystemTime::now()),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn containerds_command_lines_parse() {
        let a = parse(&v(&[
            "-namespace",
            "crid",
            "-address",
            "/run/c.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "start",
        ]));
        assert_eq!(a.namespace, "crid");
        assert_eq!(a.id, "abc");
        assert_eq!(a.action, "start");
        assert_eq!(a.bundle, None);
        let a = parse(&v(&[
            "-namespace=n",
            "-debug",
            "-id",
            "x",
            "-bundle",
            "/b",
            "delete",
        ]));
        assert_eq!((a.namespace.as_str(), a.id.as_str()), ("n", "x"));
        assert_eq!(a.bundle, Some(PathBuf::from("/b")));
        assert_eq!(a.action, "delete");
    }

    #[test]
    fn address_comes_from_the_annotation() {
        let c = br#"{"annotations":{"io.crid.shim.address":"unix:///run/crid/s/x.sock"}}"#;
        assert_eq!(address_of(c).unwrap(), "unix:///run/crid/s/x.sock");
        assert!(address_of(br#"{"annotations":{}}"#).is_err());
        assert!(address_of(br#"{"annotations":{"io.crid.shim.address":"/rel"}}"#).is_err());
        assert!(address_of(b"not json").is_err());
    }
}
