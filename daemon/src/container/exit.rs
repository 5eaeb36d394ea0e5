//! What the kubelet is told about a finished container: the reason, the
//! termination message, and which signal stops it. Pure logic.

use super::record::ContainerRecord;
use std::io::Read;
use std::path::Path;

/// Reason of a container that exited 0.
pub const COMPLETED: &str = "Completed";
/// Reason of a container that exited non-zero.
pub const ERROR: &str = "Error";
/// Reason of a container killed by the OOM killer.
pub const OOM_KILLED: &str = "OOMKilled";
/// Reason of a container whose exit crid could not learn (task gone while
/// crid or containerd was down).
pub const UNKNOWN: &str = "Unknown";
/// Exit code reported when the real one is lost (containerd's CRI uses 255).
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// Annotation in which the kubelet names the termination message path.
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// The kubelet's default termination message path.
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Most bytes of a termination message read (the kubelet's own cap).
pub const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// The CRI reason for an exit.
pub fn reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        OOM_KILLED
    } else if exit_code == 0 {
        COMPLETED
    } else {
        ERROR
    }
}

/// The host file the container's termination message was written to: the
/// CRI mount whose container path is the one the kubelet annotated.
pub fn termination_message_file(rec: &ContainerRecord) -> Option<&Path> {
    let target = rec
        .annotations
        .get(TERMINATION_MESSAGE_PATH)
        .map(String::as_str)
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
    rec.mounts
        .iter()
        .find(|m| m.container_path == target)
        .map(|m| Path::new(&m.host_path))
}

/// The termination message: the first [`MAX_TERMINATION_MESSAGE`] bytes of
/// the file, if it exists and is non-empty.
pub fn termination_message(rec: &ContainerRecord) -> String {
    let Some(path) = termination_message_file(rec) else {
        return String::new();
    };
    let mut buf = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            if let Err(e) = f.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut buf) {
                tracing::warn!(container = %rec.id, path = %path.display(), error = %e,
                    "reading the termination message");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(container = %rec.id, path = %path.display(), error = %e,
            "opening the termination message"),
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The signal number for an image's StopSignal: `SIGTERM`, `TERM` or `15`
/// (None: not a signal crid knows).
pub fn parse_signal(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|sig| sig as i32 as u32)
}

/// The signal StopContainer sends first: the image's StopSignal, else SIGTERM.
pub fn stop_signal(rec: &ContainerRecord) -> u32 {
    let term = libc::SIGTERM as u32;
    match rec.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        None => term,
        Some(s) => parse_signal(s).unwrap_or_else(|| {
            tracing::warn!(container = %rec.id, stop_signal = %s,
                "unknown StopSignal in the image; using SIGTERM");
            term
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::{ContainerState, MountRecord};

    fn rec() -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            sandbox_id: "sb".into(),
            name: "n".into(),
            attempt: 0,
            state: ContainerState::Running,
            created_at: 1,
            started_at: 2,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: "i".into(),
            image_id: "sha256:x".into(),
            image_ref: "sha256:x".into(),
            labels: Default::default(),
            annotations: Default::default(),
            mounts: vec![],
            log_path: None,
            snapshotter: "overlayfs".into(),
            snapshot_key: "c1".into(),
            stdin: false,
            stdin_once: false,
            tty: false,
            spec: serde_json::json!({}),
            stop_signal: None,
            pid: None,
            oom_killed: false,
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(reason(0, false), COMPLETED);
        assert_eq!(reason(3, false), ERROR);
        assert_eq!(reason(137, true), OOM_KILLED);
        assert_eq!(reason(0, true), OOM_KILLED);
    }

    #[test]
    fn signals_by_name_short_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
        let mut r = rec();
        assert_eq!(stop_signal(&r), 15);
        r.stop_signal = Some("SIGINT".into());
        assert_eq!(stop_signal(&r), 2);
        r.stop_signal = Some("bogus".into());
        assert_eq!(stop_signal(&r), 15);
    }

    #[test]
    fn termination_message_comes_from_the_annotated_mount_capped() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("msg");
        let mut r = rec();
        // No mount at the path: no message.
        assert_eq!(termination_message(&r), "");
        r.mounts.push(MountRecord {
            container_path: "/tmp/why".into(),
            host_path: host.display().to_string(),
            readonly: false,
            selinux_relabel: false,
            propagation: 0,
            image: None,
        });
        // The default path is not where the mount is.
        assert_eq!(termination_message_file(&r), None);
        r.annotations
            .insert(TERMINATION_MESSAGE_PATH.into(), "/tmp/why".into());
        // Mounted, but nothing written yet.
        assert_eq!(termination_message(&r), "");
        std::fs::write(&host, "x".repeat(5000)).unwrap();
        assert_eq!(termination_message(&r).len(), 4096);
        std::fs::write(&host, "bye\n").unwrap();
        assert_eq!(termination_message(&r), "bye\n");
    }
}
