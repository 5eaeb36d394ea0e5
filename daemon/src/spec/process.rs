//! The container process: argv from command/args vs the image's Entrypoint/Cmd,
//! the environment, and the working directory.
//!
//! Mirrors containerd's `customopts.WithProcessArgs`, `oci.WithDefaultPathEnv`,
//! the HOSTNAME env and `oci.WithEnv` (`replaceOrAppendEnvValues`), and the
//! working-dir choice in `container_create_linux.go` (CRI plugin 1.6/1.7).

use super::SpecError;
use crid_proto::cri::ContainerConfig;
use oci_spec::image::Config as ImageConfig;
use std::path::PathBuf;

/// The PATH every container starts with before the image's env (containerd's
/// `oci.defaultUnixEnv`).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// argv, following the kubelet's contract (Docker's commit rules):
/// - `command` set: it replaces Entrypoint and the image's Cmd is dropped
///   (`args`, if any, follow it);
/// - only `args` set: Entrypoint + args (args replace Cmd);
/// - neither: Entrypoint + Cmd.
///
/// An Entrypoint of exactly `[""]` counts as none (Docker's "reset" form).
/// An empty result is an error, as in containerd ("no command specified").
pub fn args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd().clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint().clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::InvalidArgument(
            "no command specified: neither the container config nor the image has one".into(),
        ));
    }
    Ok(command)
}

/// The environment, in containerd's order: the default PATH, `HOSTNAME`, the
/// image's env, then the container config's envs. A later `KEY=value` replaces an
/// earlier one in place; a bare `KEY` (no `=`) removes it.
pub fn env(hostname: &str, image: &ImageConfig, config: &ContainerConfig) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    merge_env(&mut env, [format!("HOSTNAME={hostname}")]);
    merge_env(&mut env, image.env().clone().unwrap_or_default());
    merge_env(
        &mut env,
        config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value)),
    );
    env
}

/// `replaceOrAppendEnvValues`: overrides replace the same key in place, new keys
/// are appended, and an override without `=` deletes the key.
pub fn merge_env(env: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).to_string();
        let pos = env
            .iter()
            .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
        match (o.contains('='), pos) {
            (true, Some(i)) => env[i] = o,
            (true, None) => env.push(o),
            (false, Some(i)) => {
                env.remove(i);
            }
            (false, None) => {}
        }
    }
}

/// The working directory: the config's, else the image's, else `/`.
pub fn cwd(config: &ContainerConfig, image: &ImageConfig) -> PathBuf {
    if !config.working_dir.is_empty() {
        return PathBuf::from(&config.working_dir);
    }
    match image.working_dir() {
        Some(w) if !w.is_empty() => PathBuf::from(w),
        _ => PathBuf::from("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid_proto::cri::KeyValue;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.set_entrypoint(entrypoint.map(|v| v.iter().map(|s| s.to_string()).collect()));
        c.set_cmd(cmd.map(|v| v.iter().map(|s| s.to_string()).collect()));
        c
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_command_args_table() {
        // https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes
        let img = image(Some(&["/ep", "-x"]), Some(&["cmd1", "cmd2"]));
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            // Neither: Entrypoint + Cmd.
            (&[], &[], &["/ep", "-x", "cmd1", "cmd2"]),
            // Command only: the image's Cmd is dropped.
            (&["/bin/c"], &[], &["/bin/c"]),
            // Args only: Entrypoint + args.
            (&[], &["a1"], &["/ep", "-x", "a1"]),
            // Both: command + args.
            (&["/bin/c"], &["a1", "a2"], &["/bin/c", "a1", "a2"]),
        ];
        for (command, args_, want) in cases {
            let got = args(&config(command, args_), &img).unwrap();
            assert_eq!(got, strs(want), "command={command:?} args={args_:?}");
        }
    }

    #[test]
    fn image_without_entrypoint_uses_cmd_or_args() {
        let img = image(None, Some(&["sh", "-c", "echo hi"]));
        assert_eq!(
            args(&config(&[], &[]), &img).unwrap(),
            strs(&["sh", "-c", "echo hi"])
        );
        // Args replace Cmd; with no Entrypoint they are the whole argv.
        assert_eq!(
            args(&config(&[], &["/bin/true"]), &img).unwrap(),
            strs(&["/bin/true"])
        );
    }

    #[test]
    fn empty_string_entrypoint_is_reset() {
        let img = image(Some(&[""]), Some(&["/bin/sh"]));
        assert_eq!(args(&config(&[], &[]), &img).unwrap(), strs(&["/bin/sh"]));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let err = args(&config(&[], &[]), &image(None, None)).unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(m) if m.contains("no command")));
        let err = args(&config(&[], &[]), &image(Some(&[]), Some(&[]))).unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(_)));
        // Command present but image empty: fine.
        assert_eq!(
            args(&config(&["/x"], &[]), &image(None, None)).unwrap(),
            strs(&["/x"])
        );
    }

    #[test]
    fn env_order_and_override() {
        let mut img = ImageConfig::default();
        img.set_env(Some(strs(&["PATH=/img/bin", "A=image", "B=image"])));
        let cfg = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "B".into(),
                    value: "config".into(),
                },
                KeyValue {
                    key: "C".into(),
                    value: "x=y".into(),
                },
                KeyValue {
                    key: "HOSTNAME".into(),
                    value: "override".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            env("pod-host", &img, &cfg),
            strs(&[
                "PATH=/img/bin",
                "HOSTNAME=override",
                "A=image",
                "B=config",
                "C=x=y"
            ])
        );
    }

    #[test]
    fn env_defaults_without_image_env() {
        let got = env("h1", &ImageConfig::default(), &ContainerConfig::default());
        assert_eq!(
            got,
            vec![DEFAULT_PATH_ENV.to_string(), "HOSTNAME=h1".into()]
        );
    }

    #[test]
    fn bare_key_removes_and_empty_value_is_kept() {
        let mut env = strs(&["A=1", "B=2"]);
        merge_env(&mut env, strs(&["A", "C=", "D"]));
        assert_eq!(env, strs(&["B=2", "C="]));
    }

    #[test]
    fn working_dir_config_then_image_then_root() {
        let mut img = ImageConfig::default();
        img.set_working_dir(Some("/srv".into()));
        let mut cfg = ContainerConfig::default();
        assert_eq!(cwd(&cfg, &img), PathBuf::from("/srv"));
        cfg.working_dir = "/work".into();
        assert_eq!(cwd(&cfg, &img), PathBuf::from("/work"));
        assert_eq!(
            cwd(&ContainerConfig::default(), &ImageConfig::default()),
            PathBuf::from("/")
        );
        img.set_working_dir(Some(String::new()));
        assert_eq!(cwd(&ContainerConfig::default(), &img), PathBuf::from("/"));
    }
}
