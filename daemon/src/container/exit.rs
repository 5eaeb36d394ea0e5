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
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if name.starts_with("SIGRT") {
        // The CRI enum's names of real-time signals (SIGRTMINPLUS3).
        return crid_proto::cri::Signal::from_str_name(&name).and_then(cri_signal_number);
    }
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|sig| sig as i32 as u32)
        .or(match name.as_str() {
            "SIGCLD" => Some(libc::SIGCHLD as u32),
            "SIGPOLL" => Some(libc::SIGIO as u32),
            "SIGIOT" => Some(libc::SIGABRT as u32),
            _ => None,
        })
}

/// Linux's first and last real-time signal numbers (glibc's SIGRTMIN is 34
/// to the kernel; the CRI enum names them from the kernel's numbers).
const SIGRTMIN: u32 = 34;
const SIGRTMAX: u32 = 64;

/// The signal number of a CRI `Signal` (None for `RUNTIME_DEFAULT`).
pub fn cri_signal_number(sig: crid_proto::cri::Signal) -> Option<u32> {
    use crid_proto::cri::Signal as S;
    let name = sig.as_str_name();
    match sig {
        S::RuntimeDefault => None,
        S::Sigrtmin => Some(SIGRTMIN),
        S::Sigrtmax => Some(SIGRTMAX),
        _ => {
            if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
                n.parse::<u32>().ok().map(|n| SIGRTMIN + n)
            } else if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
                n.parse::<u32>().ok().map(|n| SIGRTMAX - n)
            } else {
                parse_signal(name)
            }
        }
    }
}

/// The CRI `Signal` of a signal number (`RUNTIME_DEFAULT` for one it has no
/// name for).
pub fn cri_signal(n: u32) -> crid_proto::cri::Signal {
    use crid_proto::cri::Signal as S;
    let name = match n {
        SIGRTMIN => "SIGRTMIN".to_string(),
        SIGRTMAX => "SIGRTMAX".to_string(),
        n if (SIGRTMIN + 1..=SIGRTMIN + 15).contains(&n) => format!("SIGRTMINPLUS{}", n - SIGRTMIN),
        n if (SIGRTMAX - 14..SIGRTMAX).contains(&n) => format!("SIGRTMAXMINUS{}", SIGRTMAX - n),
        n => match i32::try_from(n)
            .ok()
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
        {
            Some(sig) => sig.as_str().to_string(),
            None => return S::RuntimeDefault,
        },
    };
    S::from_str_name(&name).unwrap_or(S::RuntimeDefault)
}

/// The stop signal a container is created with: the CRI config's
/// `stop_signal` unless `RUNTIME_DEFAULT` (or unknown), else the image's
/// STOPSIGNAL; `None` means SIGTERM.
pub fn configured_stop_signal(config_signal: i32, image_signal: Option<String>) -> Option<String> {
    crid_proto::cri::Signal::try_from(config_signal)
        .ok()
        .filter(|s| *s != crid_proto::cri::Signal::RuntimeDefault)
        .map(|s| s.as_str_name().to_string())
        .or(image_signal)
}

/// The signal StopContainer sends first: the configured stop signal, else
/// SIGTERM (an unknown name is logged and replaced by SIGTERM).
pub fn stop_signal(rec: &ContainerRecord) -> u32 {
    let configured = rec.stop_signal.as_deref().filter(|s| !s.is_empty());
    effective_stop_signal(rec).unwrap_or_else(|| {
        tracing::warn!(container = %rec.id, stop_signal = ?configured,
            "unknown stop signal; using SIGTERM");
        libc::SIGTERM as u32
    })
}

/// The stop signal in effect, without logging: None only for a configured
/// name crid does not know.
pub fn effective_stop_signal(rec: &ContainerRecord) -> Option<u32> {
    match rec.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        None => Some(libc::SIGTERM as u32),
        Some(s) => parse_signal(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::{ContainerState, MountRecord};

    fn rec() -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Running,
            started_at: 2,
            ..ContainerRecord::sample("c1", "sb")
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
    fn cri_signals_both_ways() {
        use crid_proto::cri::Signal as S;
        assert_eq!(cri_signal_number(S::Sigint), Some(2));
        assert_eq!(cri_signal_number(S::Sigterm), Some(15));
        assert_eq!(cri_signal_number(S::RuntimeDefault), None);
        assert_eq!(cri_signal_number(S::Sigrtmin), Some(34));
        assert_eq!(cri_signal_number(S::Sigrtminplus3), Some(37));
        assert_eq!(cri_signal_number(S::Sigrtmaxminus1), Some(63));
        assert_eq!(cri_signal_number(S::Sigrtmax), Some(64));
        assert_eq!(cri_signal_number(S::Sigcld), Some(17));
        assert_eq!(cri_signal(2), S::Sigint);
        assert_eq!(cri_signal(15), S::Sigterm);
        assert_eq!(cri_signal(37), S::Sigrtminplus3);
        assert_eq!(cri_signal(50), S::Sigrtmaxminus14);
        assert_eq!(cri_signal(0), S::RuntimeDefault);
        // Every named signal survives the round trip (aliases map to their target).
        for n in 1..=64 {
            let s = cri_signal(n);
            if s != S::RuntimeDefault {
                assert_eq!(cri_signal_number(s), Some(n), "{s:?}");
            }
        }
        assert_eq!(parse_signal("SIGRTMINPLUS3"), Some(37));
    }

    #[test]
    fn the_configs_stop_signal_wins_over_the_images() {
        use crid_proto::cri::Signal as S;
        let image = Some("SIGQUIT".to_string());
        assert_eq!(
            configured_stop_signal(S::Sigint as i32, image.clone()).as_deref(),
            Some("SIGINT")
        );
        assert_eq!(
            configured_stop_signal(S::RuntimeDefault as i32, image.clone()).as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(
            configured_stop_signal(9999, image).as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(configured_stop_signal(0, None), None);
        let mut r = rec();
        r.stop_signal = configured_stop_signal(S::Sigusr1 as i32, None);
        assert_eq!(stop_signal(&r), 10);
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
