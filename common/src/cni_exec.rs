//! Running CNI plugins the way libcni does: per plugin of a network list, the
//! plugin conf on stdin (with `name`, `cniVersion`, `prevResult` and
//! `runtimeConfig` injected), the `CNI_*` environment, the result on stdout.
//! The pod helper runs ADD (from the host netns); crid runs DEL, so that
//! teardown also works when the helper is gone. Spec 1.0 and 0.4 results are
//! read; both carry `ips[].address` in CIDR form.

use crate::cni_config::{find_plugin, NetworkConfigList};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A failed CNI operation, with the plugin's own error message.
#[derive(Debug, Error)]
pub enum CniError {
    /// The plugin binary is in none of the bin dirs.
    #[error("CNI plugin {0:?} not found in the bin dirs")]
    NotFound(String),
    /// The plugin could not be started.
    #[error("starting CNI plugin {plugin}: {source}")]
    Spawn {
        /// The plugin type.
        plugin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugin ran and reported an error.
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// The plugin's `msg` and `details`, or its raw output.
        message: String,
    },
    /// The plugin's result is not JSON.
    #[error("CNI plugin {plugin} returned an unreadable result: {reason}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// Why.
        reason: String,
    },
}

/// Everything needed to run a network list for one pod; serialisable so crid
/// can hand it to the helper and keep it for DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInvocation {
    /// The config file the list came from (for status/logs).
    pub file: PathBuf,
    /// Network name.
    pub name: String,
    /// CNI version of the list.
    pub cni_version: String,
    /// The plugin confs, raw.
    pub plugins: Vec<Value>,
    /// `CNI_CONTAINERID`: the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the netns pin path.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Plugin search path (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// `CNI_ARGS` pairs (K8S_POD_NAMESPACE etc.).
    pub args: Vec<(String, String)>,
    /// Capability args (`portMappings`, `dns`, `bandwidth`) offered to plugins
    /// that declare the capability.
    pub capability_args: Map<String, Value>,
}

impl CniInvocation {
    /// An invocation of `list` for one pod.
    pub fn new(list: &NetworkConfigList, container_id: &str, netns: &Path) -> CniInvocation {
        CniInvocation {
            file: list.file.clone(),
            name: list.name.clone(),
            cni_version: list.cni_version.clone(),
            plugins: list.plugins.clone(),
            container_id: container_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: "eth0".into(),
            bin_dirs: Vec::new(),
            args: Vec::new(),
            capability_args: Map::new(),
        }
    }

    /// The stdin conf of plugin `i`: name/cniVersion injected, `prevResult`
    /// chained, `runtimeConfig` holding the capability args it declares.
    pub fn plugin_conf(&self, i: usize, prev_result: Option<&Value>) -> Value {
        let mut conf = match self.plugins.get(i) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = conf.get("capabilities") {
            for (k, v) in caps {
                if v.as_bool() == Some(true) {
                    if let Some(arg) = self.capability_args.get(k) {
                        rc.insert(k.clone(), arg.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        Value::Object(conf)
    }

    fn env(&self, command: &str) -> Vec<(String, String)> {
        let path = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut args = vec!["IgnoreUnknown=1".to_string()];
        args.extend(self.args.iter().map(|(k, v)| format!("{k}={v}")));
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.netns.display().to_string()),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_PATH".into(), path),
            ("CNI_ARGS".into(), args.join(";")),
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ]
    }

    fn plugin_type(&self, i: usize) -> String {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    fn run(
        &self,
        runner: &dyn PluginRunner,
        i: usize,
        command: &'static str,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin = self.plugin_type(i);
        let bin = find_plugin(&plugin, &self.bin_dirs)
            .ok_or_else(|| CniError::NotFound(plugin.clone()))?;
        let conf = self.plugin_conf(i, prev);
        let stdin = serde_json::to_vec(&conf).unwrap_or_default();
        let out = runner
            .exec(&bin, &self.env(command), &stdin)
            .map_err(|source| CniError::Spawn {
                plugin: plugin.clone(),
                source,
            })?;
        if !out.success {
            return Err(CniError::Plugin {
                plugin,
                command,
                message: plugin_error_message(&out.stdout, &out.stderr),
            });
        }
        Ok(out.stdout)
    }

    /// ADD through the list in order; returns the last plugin's result.
    pub fn add(&self, runner: &dyn PluginRunner) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let out = self.run(runner, i, "ADD", prev.as_ref())?;
            let v: Value = serde_json::from_slice(&out).map_err(|e| CniError::BadResult {
                plugin: self.plugin_type(i),
                reason: e.to_string(),
            })?;
            prev = Some(v);
        }
        prev.ok_or_else(|| CniError::BadResult {
            plugin: String::new(),
            reason: "network list has no plugins".into(),
        })
    }

    /// DEL through the list in reverse with the cached result as prevResult;
    /// every plugin is tried, the first error returned.
    pub fn del(&self, runner: &dyn PluginRunner, prev: Option<&Value>) -> Result<(), CniError> {
        let mut first_err = None;
        for i in (0..self.plugins.len()).rev() {
            if let Err(e) = self.run(runner, i, "DEL", prev) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The plugin's `{"code","msg","details"}` error, or its raw output.
fn plugin_error_message(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = v.get("details").and_then(Value::as_str).unwrap_or("");
        if !msg.is_empty() {
            return if details.is_empty() {
                msg.to_string()
            } else {
                format!("{msg}: {details}")
            };
        }
    }
    let raw = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
    raw.trim().to_string()
}

/// What a plugin run produced.
#[derive(Debug, Clone, Default)]
pub struct PluginOutput {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output (the result or error JSON).
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Starts a plugin binary: the one OS call of this module, behind a trait so
/// the logic above is tested with a recording fake and so the helper can add
/// its setns-to-the-host-netns step.
pub trait PluginRunner {
    /// Runs `bin` with exactly `env`, feeding `stdin`.
    fn exec(
        &self,
        bin: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<PluginOutput>;
}

/// Runs plugins as plain children in the caller's namespaces (crid's DEL).
pub struct HostRunner;

impl PluginRunner for HostRunner {
    fn exec(
        &self,
        bin: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<PluginOutput> {
        run_command(std::process::Command::new(bin), env, stdin)
    }
}

/// Runs a prepared command with a clean environment, stdin fed, output kept.
pub fn run_command(
    mut cmd: std::process::Command,
    env: &[(String, String)],
    stdin: &[u8],
) -> std::io::Result<PluginOutput> {
    use std::io::Write;
    use std::process::Stdio;
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(mut w) = child.stdin.take() {
        // A plugin that exits without reading its stdin is not an error here;
        // its exit status tells.
        let _ = w.write_all(stdin);
    }
    let out = child.wait_with_output()?;
    Ok(PluginOutput {
        success: out.status.success(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// The pod's IPs from a 1.0 or 0.4 result, IPv4 first (the kubelet treats
/// the first as the primary IP), without prefix length.
pub fn pod_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(|addr| addr.split('/').next().unwrap_or(addr).to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    struct Fake {
        calls: RefCell<Vec<(String, String, Value)>>,
        fail: Option<&'static str>,
    }

    impl PluginRunner for Fake {
        fn exec(
            &self,
            bin: &Path,
            env: &[(String, String)],
            stdin: &[u8],
        ) -> std::io::Result<PluginOutput> {
            let name = bin.file_name().unwrap().to_string_lossy().into_owned();
            let cmd = env
                .iter()
                .find(|(k, _)| k == "CNI_COMMAND")
                .unwrap()
                .1
                .clone();
            self.calls.borrow_mut().push((
                name.clone(),
                cmd,
                serde_json::from_slice(stdin).unwrap(),
            ));
            if self.fail == Some(name.as_str()) {
                return Ok(PluginOutput {
                    success: false,
                    stdout: br#"{"code":11,"msg":"boom","details":"no bridge"}"#.to_vec(),
                    stderr: vec![],
                });
            }
            let out = json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":format!("10.0.0.{}/24", self.calls.borrow().len())}]});
            Ok(PluginOutput {
                success: true,
                stdout: serde_json::to_vec(&out).unwrap(),
                stderr: vec![],
            })
        }
    }

    fn inv(bins: &Path) -> CniInvocation {
        std::fs::write(bins.join("bridge"), "").unwrap();
        std::fs::write(bins.join("portmap"), "").unwrap();
        let list = NetworkConfigList {
            file: "/x.conflist".into(),
            name: "net".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![
                json!({"type":"bridge","bridge":"b0"}),
                json!({"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}),
            ],
        };
        let mut i = CniInvocation::new(&list, "sb1", Path::new("/run/ns/net"));
        i.bin_dirs = vec![bins.to_path_buf()];
        i.capability_args
            .insert("portMappings".into(), json!([{"hostPort":80}]));
        i.capability_args
            .insert("bandwidth".into(), json!({"ingressRate":1}));
        i
    }

    #[test]
    fn add_chains_prev_result_and_injects_runtime_config() {
        let d = tempfile::tempdir().unwrap();
        let i = inv(d.path());
        let fake = Fake {
            calls: RefCell::new(vec![]),
            fail: None,
        };
        let res = i.add(&fake).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].2["name"], "net");
        assert_eq!(calls[0].2["cniVersion"], "1.0.0");
        assert!(calls[0].2.get("prevResult").is_none());
        assert!(calls[0].2.get("runtimeConfig").is_none());
        assert_eq!(calls[1].2["prevResult"]["ips"][1]["address"], "10.0.0.1/24");
        assert_eq!(
            calls[1].2["runtimeConfig"],
            json!({"portMappings":[{"hostPort":80}]}),
            "only declared, enabled capabilities"
        );
        assert_eq!(pod_ips(&res), vec!["10.0.0.2", "fd00::5"]);
    }

    #[test]
    fn del_runs_in_reverse_and_reports_plugin_errors() {
        let d = tempfile::tempdir().unwrap();
        let i = inv(d.path());
        let fake = Fake {
            calls: RefCell::new(vec![]),
            fail: Some("bridge"),
        };
        let prev = json!({"ips":[]});
        let err = i.del(&fake, Some(&prev)).unwrap_err().to_string();
        assert!(err.contains("boom: no bridge"), "{err}");
        let calls = fake.calls.borrow();
        let order: Vec<_> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(order, vec!["portmap", "bridge"]);
        assert!(calls
            .iter()
            .all(|c| c.1 == "DEL" && c.2["prevResult"] == prev));
    }

    #[test]
    fn missing_plugin_and_old_results() {
        let d = tempfile::tempdir().unwrap();
        let mut i = inv(d.path());
        i.plugins.push(json!({"type":"nope"}));
        let fake = Fake {
            calls: RefCell::new(vec![]),
            fail: None,
        };
        assert!(matches!(i.add(&fake), Err(CniError::NotFound(p)) if p == "nope"));
        let v04 = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.9/16","gateway":"10.1.0.1"}]});
        assert_eq!(pod_ips(&v04), vec!["10.1.0.9"]);
        assert!(pod_ips(&json!({})).is_empty());
    }
}
