//! Checks CreateContainer runs on user-supplied paths before anything touches
//! the host, and the pure decision of how to prepare a bind-mount source.
//!
//! Rules: every CRI mount/device path is absolute and has no `..` component;
//! a log path is relative to the sandbox's log_directory and cannot leave it;
//! a missing host path is created as a directory (containerd's CRI plugin does
//! `MkdirAll(src, 0755)`, which is what the kubelet's hostPath volumes expect),
//! an existing directory is bound as a directory and anything else as a file
//! (runc creates a file mountpoint for a non-directory source).

use super::SpecError;
use crid_proto::cri::ContainerConfig;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest single argument or `KEY=VALUE` (the kernel's MAX_ARG_STRLEN,
/// 32 pages: execve fails with E2BIG beyond it).
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Most bytes of arguments + environment together (half the kernel's
/// ARG_MAX at the default 8 MiB stack, leaving room for runc's own).
pub const MAX_EXEC_BYTES: usize = 1024 * 1024;
/// Most CRI mounts of one container (a pod with this many volumes is
/// hostile or broken; each one is a bind mount runc makes).
pub const MAX_MOUNTS: usize = 1024;
/// Most bytes of labels + annotations of one container (the API server's
/// limit on a pod's annotations, 256 KiB).
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// Most CRI devices of one container.
pub const MAX_DEVICES: usize = 1024;

/// Sizes a container process could never start with (execve's limits), or
/// that only a hostile request has; refused before any work.
pub fn request_size(config: &ContainerConfig) -> Result<(), SpecError> {
    let mut total = 0usize;
    let strings = config
        .command
        .iter()
        .chain(&config.args)
        .map(|s| (s.len(), "argument"))
        .chain(
            config
                .envs
                .iter()
                .map(|kv| (kv.key.len() + 1 + kv.value.len(), "environment variable")),
        );
    for (len, what) in strings {
        if len >= MAX_ARG_BYTES {
            return Err(SpecError::InvalidArgument(format!(
                "an {what} of {len} bytes is longer than the kernel's limit of {MAX_ARG_BYTES}"
            )));
        }
        total = total.saturating_add(len + 1);
    }
    if total > MAX_EXEC_BYTES {
        return Err(SpecError::InvalidArgument(format!(
            "command, arguments and environment total {total} bytes, more than {MAX_EXEC_BYTES}"
        )));
    }
    if let Some(kv) = config
        .envs
        .iter()
        .find(|kv| kv.key.is_empty() || kv.key.contains('='))
    {
        return Err(SpecError::InvalidArgument(format!(
            "environment variable name {:?} is empty or contains \"=\"",
            kv.key
        )));
    }
    let nul = config
        .command
        .iter()
        .chain(&config.args)
        .chain(config.envs.iter().flat_map(|kv| [&kv.key, &kv.value]))
        .chain(std::iter::once(&config.working_dir))
        .any(|s| s.contains('\0'));
    if nul {
        return Err(SpecError::InvalidArgument(
            "command, arguments, environment and working dir cannot contain NUL bytes".into(),
        ));
    }
    if config.mounts.len() > MAX_MOUNTS {
        return Err(SpecError::InvalidArgument(format!(
            "{} mounts, more than {MAX_MOUNTS}",
            config.mounts.len()
        )));
    }
    let meta: usize = config
        .labels
        .iter()
        .chain(&config.annotations)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if meta > MAX_METADATA_BYTES {
        return Err(SpecError::InvalidArgument(format!(
            "labels and annotations total {meta} bytes, more than {MAX_METADATA_BYTES}"
        )));
    }
    if config.devices.len() > MAX_DEVICES {
        return Err(SpecError::InvalidArgument(format!(
            "{} devices, more than {MAX_DEVICES}",
            config.devices.len()
        )));
    }
    Ok(())
}

/// A CRI container path (mount or device destination): absolute, no `..`.
pub fn container_path(p: &str) -> Result<(), SpecError> {
    absolute_without_dotdot(p, "container path")
}

/// A CRI host path (mount or device source): absolute, no `..`.
pub fn host_path(p: &str) -> Result<(), SpecError> {
    absolute_without_dotdot(p, "host path")
}

/// A file on the node a request names (a seccomp profile): absolute, no `..`.
pub fn node_file_path(p: &str, what: &str) -> Result<(), SpecError> {
    absolute_without_dotdot(p, what)
}

fn absolute_without_dotdot(p: &str, what: &str) -> Result<(), SpecError> {
    if p.is_empty() {
        return Err(SpecError::InvalidArgument(format!("{what} is empty")));
    }
    if p.contains('\0') {
        return Err(SpecError::InvalidArgument(format!(
            "{what} {p:?} contains a NUL byte"
        )));
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(SpecError::InvalidArgument(format!(
            "{what} {p:?} is not absolute"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::InvalidArgument(format!(
            "{what} {p:?} contains \"..\""
        )));
    }
    Ok(())
}

/// The container's log file: `log_directory/log_path`, or `None` when either is
/// empty (containerd then keeps no log file). `log_path` must be relative and
/// stay inside the directory.
pub fn log_path(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>, SpecError> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    absolute_without_dotdot(log_directory, "sandbox log_directory")?;
    if log_path.contains('\0') {
        return Err(SpecError::InvalidArgument(format!(
            "log path {log_path:?} contains a NUL byte"
        )));
    }
    let rel = Path::new(log_path);
    let mut normal = 0;
    for c in rel.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SpecError::InvalidArgument(format!(
                    "log path {log_path:?} must be relative to the sandbox log directory \
                     without \"..\""
                )))
            }
        }
    }
    if normal == 0 || log_path.ends_with('/') {
        return Err(SpecError::InvalidArgument(format!(
            "log path {log_path:?} does not name a file"
        )));
    }
    Ok(Some(Path::new(log_directory).join(rel)))
}

/// What a host path is, as far as mounting it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory (after following symlinks).
    Directory,
    /// Anything else: regular file, socket, device, ...
    Other,
}

/// Stat that follows symlinks (real impl: [`SystemStat`]).
pub trait PathStat {
    /// The kind of `path`; `ErrorKind::NotFound` when it does not exist.
    fn kind(&self, path: &Path) -> io::Result<FileKind>;
}

/// How CreateContainer prepares a CRI mount's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathAction {
    /// Missing: create it as a directory (mode 0755, with parents), bind it.
    CreateDirectory,
    /// An existing directory: bind it.
    BindDirectory,
    /// An existing non-directory: bind it as a file.
    BindFile,
}

/// Decides how to prepare `path` (already checked with [`host_path`]).
pub fn host_path_action(stat: &dyn PathStat, path: &Path) -> Result<HostPathAction, SpecError> {
    match stat.kind(path) {
        Ok(FileKind::Directory) => Ok(HostPathAction::BindDirectory),
        Ok(FileKind::Other) => Ok(HostPathAction::BindFile),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HostPathAction::CreateDirectory),
        Err(e) => Err(SpecError::io(format!("stat {}", path.display()), e)),
    }
}

/// The real [`PathStat`].
pub struct SystemStat;

impl PathStat for SystemStat {
    fn kind(&self, path: &Path) -> io::Result<FileKind> {
        let md = std::fs::metadata(path)?;
        Ok(if md.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn container_and_host_paths() {
        for ok in ["/", "/data", "/a/b/./c", "/a//b", "/a/b..c", "/..a"] {
            container_path(ok).unwrap();
            host_path(ok).unwrap();
        }
        for bad in ["", "data", "./data", "/a/../b", "/..", "/a/..", "a\0b"] {
            assert!(
                matches!(container_path(bad), Err(SpecError::InvalidArgument(_))),
                "{bad:?}"
            );
            assert!(host_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_path_joins_and_stays_inside() {
        assert_eq!(
            log_path("/var/log/pods/ns_p_uid", "c1/0.log").unwrap(),
            Some(PathBuf::from("/var/log/pods/ns_p_uid/c1/0.log"))
        );
        assert_eq!(
            log_path("/var/log/pods/x", "./c1/0.log").unwrap(),
            Some(PathBuf::from("/var/log/pods/x/./c1/0.log"))
        );
        assert_eq!(log_path("", "c1/0.log").unwrap(), None);
        assert_eq!(log_path("/var/log/pods/x", "").unwrap(), None);
        for bad in [
            "../escape.log",
            "c1/../../escape.log",
            "/abs.log",
            ".",
            "c1/",
            "a\0b",
        ] {
            assert!(
                matches!(
                    log_path("/var/log/pods/x", bad),
                    Err(SpecError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
        assert!(log_path("relative/dir", "0.log").is_err());
        assert!(log_path("/var/log/../etc", "0.log").is_err());
    }

    struct FakeStat(HashMap<PathBuf, io::Result<FileKind>>);

    impl PathStat for FakeStat {
        fn kind(&self, path: &Path) -> io::Result<FileKind> {
            match self.0.get(path) {
                Some(Ok(k)) => Ok(*k),
                Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Err(io::ErrorKind::NotFound.into()),
            }
        }
    }

    #[test]
    fn host_path_decision() {
        let stat = FakeStat(HashMap::from([
            (PathBuf::from("/dir"), Ok(FileKind::Directory)),
            (PathBuf::from("/file"), Ok(FileKind::Other)),
            (
                PathBuf::from("/denied"),
                Err(io::ErrorKind::PermissionDenied.into()),
            ),
        ]));
        let act = |p: &str| host_path_action(&stat, Path::new(p));
        assert_eq!(act("/dir").unwrap(), HostPathAction::BindDirectory);
        assert_eq!(act("/file").unwrap(), HostPathAction::BindFile);
        assert_eq!(act("/missing").unwrap(), HostPathAction::CreateDirectory);
        assert!(matches!(act("/denied"), Err(SpecError::Io { .. })));
    }

    #[test]
    fn system_stat_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("link-to-dir")).unwrap();
        std::os::unix::fs::symlink(d.join("f"), d.join("link-to-file")).unwrap();
        let act = |p: &str| host_path_action(&SystemStat, &d.join(p)).unwrap();
        assert_eq!(act("sub"), HostPathAction::BindDirectory);
        assert_eq!(act("link-to-dir"), HostPathAction::BindDirectory);
        assert_eq!(act("f"), HostPathAction::BindFile);
        assert_eq!(act("link-to-file"), HostPathAction::BindFile);
        assert_eq!(act("nope"), HostPathAction::CreateDirectory);
    }
}
