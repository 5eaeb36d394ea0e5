//! Finding and checking the CNI network configuration the way libcni does:
//! the first `.conflist`, `.conf` or `.json` file by name in the config dir.
//! Used by crid for `Status` (NetworkReady) and by the pod helper for CNI ADD.

use serde_json::Value;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why no usable network config was found.
#[derive(Debug, Error)]
pub enum CniConfigError {
    /// The directory is missing or unreadable.
    #[error("cannot read CNI config dir {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no config file.
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
    /// A config file is not valid JSON or lacks required fields.
    #[error("invalid network config {file}: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A plugin named by the config is in none of the bin dirs.
    #[error("network config {file} needs plugin {plugin:?}, not found in {dirs}")]
    MissingPlugin {
        /// The file.
        file: PathBuf,
        /// The plugin type.
        plugin: String,
        /// The searched dirs, joined.
        dirs: String,
    },
}

/// A parsed network configuration list (a `.conf` is wrapped as a list of one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The file it came from.
    pub file: PathBuf,
    /// Network name.
    pub name: String,
    /// CNI spec version of the list.
    pub cni_version: String,
    /// Plugin configs in order, each the raw JSON object.
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    /// Plugin `type`s in order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }
}

/// Config files in `dir` that libcni would consider, sorted by name.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, CniConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CniConfigError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses one config file (`.conflist` as a list, otherwise a single plugin).
pub fn parse_file(file: &Path) -> Result<NetworkConfigList, CniConfigError> {
    let invalid = |reason: String| CniConfigError::Invalid {
        file: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read(file).map_err(|e| invalid(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("missing \"name\"".into()))?
        .to_string();
    let cni_version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.4.0")
        .to_string();
    let is_list =
        file.extension().and_then(|e| e.to_str()) == Some("conflist") || v.get("plugins").is_some();
    let plugins = if is_list {
        let list = v
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("missing or empty \"plugins\"".into()))?;
        list.clone()
    } else {
        vec![v.clone()]
    };
    for (i, p) in plugins.iter().enumerate() {
        if p.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid(format!("plugin {i} has no \"type\"")));
        }
    }
    Ok(NetworkConfigList {
        file: file.to_path_buf(),
        name,
        cni_version,
        plugins,
    })
}

/// Finds a plugin binary in the bin dirs, in order.
pub fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    if plugin.contains('/') {
        return None;
    }
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
}

/// The network config crid uses: the first file by name in `dir`, parsed,
/// with every plugin it names present in `bin_dirs`.
pub fn load_default(dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfigList, CniConfigError> {
    let files = config_files(dir)?;
    let first = files
        .first()
        .ok_or_else(|| CniConfigError::NoConfig(dir.to_path_buf()))?;
    let list = parse_file(first)?;
    for plugin in list.plugin_types() {
        if find_plugin(plugin, bin_dirs).is_none() {
            return Err(CniConfigError::MissingPlugin {
                file: list.file.clone(),
                plugin: plugin.to_string(),
                dirs: bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            });
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn bin_dir_with(plugins: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in plugins {
            fs::write(d.path().join(p), "#!/bin/sh\n").unwrap();
        }
        d
    }

    #[test]
    fn empty_and_missing_dirs() {
        let d = tempfile::tempdir().unwrap();
        let bins = vec![d.path().to_path_buf()];
        assert!(matches!(
            load_default(d.path(), &bins),
            Err(CniConfigError::NoConfig(_))
        ));
        assert!(matches!(
            load_default(&d.path().join("nope"), &bins),
            Err(CniConfigError::Dir { .. })
        ));
    }

    #[test]
    fn first_file_by_name_wins_and_plugins_are_checked() {
        let conf = tempfile::tempdir().unwrap();
        let bins = bin_dir_with(&["bridge", "host-local"]);
        let bin_dirs = vec![PathBuf::from("/nonexistent"), bins.path().to_path_buf()];
        fs::write(
            conf.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        fs::write(
            conf.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        fs::write(conf.path().join("00-ignored.txt"), "junk").unwrap();
        let list = load_default(conf.path(), &bin_dirs).unwrap();
        assert_eq!(list.name, "a");
        assert_eq!(list.plugin_types(), vec!["bridge"]);

        fs::remove_file(conf.path().join("10-a.conf")).unwrap();
        let err = load_default(conf.path(), &bin_dirs).unwrap_err();
        assert!(
            matches!(&err, CniConfigError::MissingPlugin { plugin, .. } if plugin == "portmap"),
            "{err}"
        );
    }

    #[test]
    fn invalid_configs_are_explained() {
        let conf = tempfile::tempdir().unwrap();
        let bins = vec![conf.path().to_path_buf()];
        let f = conf.path().join("10.conflist");
        for (text, want) in [
            ("not json", "expected"),
            (r#"{"plugins":[{"type":"x"}]}"#, "name"),
            (r#"{"name":"n","plugins":[]}"#, "plugins"),
            (r#"{"name":"n","plugins":[{"foo":1}]}"#, "type"),
        ] {
            fs::write(&f, text).unwrap();
            let err = load_default(conf.path(), &bins).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn plugin_names_cannot_be_paths() {
        assert!(find_plugin("../../bin/sh", &[PathBuf::from("/usr/bin")]).is_none());
    }
}
