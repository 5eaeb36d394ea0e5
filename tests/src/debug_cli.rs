//! `crid debug ...` as an operator runs it: the crid binary with the config
//! file the harness started crid with (shared by the ops and systemd suites).

use crate::pods::Node;
use crate::workspace_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The config file the harness started crid with.
pub fn config_file(n: &Node) -> PathBuf {
    n.crid
        .config
        .socket
        .parent()
        .expect("socket in a dir")
        .join("crid.toml")
}

/// `crid --config FILE debug ARGS`; its stdout (asserting it succeeded).
pub fn crid_debug(config: &Path, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("crid"))
        .arg("--config")
        .arg(config)
        .arg("debug")
        .args(args)
        .output()
        .expect("running crid debug");
    assert!(
        out.status.success(),
        "crid debug {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `crid debug ARGS --json`, parsed.
pub fn crid_debug_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = crid_debug(config, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The entry of `debug pods --json` for pod `id`.
pub fn pod_entry(pods: &serde_json::Value, id: &str) -> serde_json::Value {
    pods.as_array()
        .expect("a JSON array of pods")
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("pod {id} not in {pods:#}"))
        .clone()
}
