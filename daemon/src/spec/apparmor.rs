//! AppArmor (issue 11): the profile runc confines the container's process in
//! (`process.apparmorProfile`).
//!
//! Mirrors containerd's CRI plugin 1.6/1.7 (`generateApparmorSpecOpts`),
//! with one departure:
//! - the request is the `apparmor` field, else the deprecated
//!   `apparmor_profile` string ([`super::security_profile`]);
//! - node without AppArmor (runc's test: /sys/kernel/security/apparmor exists
//!   and /sys/module/apparmor/parameters/enabled says `Y`; [`HostFacts`]):
//!   unset, RuntimeDefault and Unconfined mean no profile, Localhost is
//!   FailedPrecondition naming the profile. *Departure:* containerd refuses
//!   RuntimeDefault there too ("apparmor is not supported"); crid follows the
//!   CRI comment on `apparmor_profile` ("runtime/default: equivalent to not
//!   specifying a profile"), so a pod asking for the runtime default runs on
//!   nodes with and without AppArmor alike.
//! - node with AppArmor: unset means RuntimeDefault (kubernetes#51746, as
//!   containerd). RuntimeDefault is crid's profile [`DEFAULT_PROFILE`], which
//!   crid loads itself (`apparmor_parser -Kr`, text from
//!   [`default_profile_text`]) when the kernel does not have it yet, like
//!   containerd's `cri-containerd.apparmor.d`; a privileged container gets
//!   none. Localhost names a profile that must be loaded already
//!   (InvalidArgument otherwise); it applies to privileged containers too
//!   (containerd does the same). Unconfined means none.

use super::security_profile::{requested, Requested};
use super::{HostFacts, HostView, SpecError};
use crid_proto::cri::LinuxContainerSecurityContext;
use std::io;

/// Name of crid's RuntimeDefault AppArmor profile.
pub const DEFAULT_PROFILE: &str = "crid-default";

/// The container's AppArmor profile name, `None` for none.
pub fn profile(
    sc: &LinuxContainerSecurityContext,
    host: &HostFacts,
    view: &dyn HostView,
) -> Result<Option<String>, SpecError> {
    #[allow(deprecated)]
    let asked = requested(sc.apparmor.as_ref(), &sc.apparmor_profile, "apparmor")?;
    if !host.apparmor_enabled {
        return match asked {
            Requested::Localhost(name) => Err(SpecError::FailedPrecondition(format!(
                "apparmor profile {name:?} requested but AppArmor is not enabled on this node"
            ))),
            _ => Ok(None),
        };
    }
    match asked {
        Requested::Unconfined => Ok(None),
        Requested::Unset | Requested::RuntimeDefault if sc.privileged => Ok(None),
        Requested::Unset | Requested::RuntimeDefault => {
            let loaded = view
                .apparmor_profile_loaded(DEFAULT_PROFILE)
                .map_err(|e| SpecError::io("reading the loaded AppArmor profiles", e))?;
            if !loaded {
                view.load_default_apparmor_profile().map_err(|e| {
                    SpecError::io(format!("loading AppArmor profile {DEFAULT_PROFILE}"), e)
                })?;
            }
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
        Requested::Localhost(name) => {
            let loaded = view
                .apparmor_profile_loaded(&name)
                .map_err(|e| SpecError::io("reading the loaded AppArmor profiles", e))?;
            if !loaded {
                return Err(SpecError::InvalidArgument(format!(
                    "apparmor profile {name:?} is not loaded on this node"
                )));
            }
            Ok(Some(name))
        }
    }
}

/// Whether `name` is among the profiles of /sys/kernel/security/apparmor/profiles
/// (lines `name (mode)`).
pub fn profile_listed(profiles: &str, name: &str) -> bool {
    profiles.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(" ("))
    })
}

/// Which of the distribution's policy files exist (under /etc/apparmor.d).
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyFiles {
    /// `abi/3.0`.
    pub abi_3_0: bool,
    /// `tunables/global` (defines @{PROC}).
    pub tunables_global: bool,
    /// `abstractions/base`.
    pub abstractions_base: bool,
}

/// crid's default profile: the container may use the network, capabilities
/// it holds and files, but not mount, not write kernel knobs in /proc and
/// /sys (its own `/proc/<pid>` and /proc/sys/kernel/shm* excepted), not read
/// /proc/kcore, firmware or security fs; it takes signals from unconfined
/// processes and runc, and signals and traces only its own kind.
pub fn default_profile_text(files: PolicyFiles) -> String {
    let mut t = String::new();
    if files.abi_3_0 {
        t.push_str("abi <abi/3.0>,\n");
    }
    if files.tunables_global {
        t.push_str("#include <tunables/global>\n");
    } else {
        t.push_str("@{PROC}=/proc/\n");
    }
    t.push_str(&format!(
        "\nprofile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    if files.abstractions_base {
        t.push_str("  #include <abstractions/base>\n");
    }
    t.push_str(&format!(
        r#"  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (receive) peer=runc,
  signal (send,receive) peer={DEFAULT_PROFILE},
  ptrace (trace,tracedby,read,readby) peer={DEFAULT_PROFILE},

  deny mount,

  # /proc: no writes to files directly in /proc, nor below anything but
  # /proc/<pid> and /proc/sys; in /proc/sys only kernel/shm* is writable.
  deny @{{PROC}}/* w,
  deny @{{PROC}}/{{[^1-9/],[^1-9/][^0-9/],[^1-9s/][^0-9y/][^0-9s/],[^1-9/][^0-9/][^0-9/][^0-9/]*}}/** w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,

  # /sys: read-only but for /sys/fs/cgroup; firmware, powercap and
  # securityfs not even readable.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"#
    ));
    t
}

/// The node's loaded AppArmor profiles include `name`.
pub fn system_profile_loaded(name: &str) -> io::Result<bool> {
    let list = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")?;
    Ok(profile_listed(&list, name))
}

/// Loads crid's default profile with `apparmor_parser -Kr` (replace, no cache),
/// the text on its stdin.
pub fn system_load_default() -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let d = std::path::Path::new("/etc/apparmor.d");
    let text = default_profile_text(PolicyFiles {
        abi_3_0: d.join("abi/3.0").exists(),
        tunables_global: d.join("tunables/global").exists(),
        abstractions_base: d.join("abstractions/base").exists(),
    });
    let mut child = Command::new("apparmor_parser")
        .arg("-Kr")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "apparmor_parser: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::FakeHost;
    use crid_proto::cri::security_profile::ProfileType;
    use crid_proto::cri::SecurityProfile;

    fn sc(t: Option<(ProfileType, &str)>) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: t.map(|(t, r)| SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    fn host(enabled: bool) -> HostFacts {
        HostFacts {
            apparmor_enabled: enabled,
            ..Default::default()
        }
    }

    #[test]
    fn without_apparmor_only_a_named_profile_is_an_error() {
        let view = FakeHost::default();
        let h = host(false);
        for s in [
            sc(None),
            sc(Some((ProfileType::RuntimeDefault, ""))),
            sc(Some((ProfileType::Unconfined, ""))),
        ] {
            assert_eq!(profile(&s, &h, &view).unwrap(), None);
        }
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            apparmor_profile: "runtime/default".into(),
            ..Default::default()
        };
        assert_eq!(profile(&old, &h, &view).unwrap(), None);
        match profile(&sc(Some((ProfileType::Localhost, "my-prof"))), &h, &view) {
            Err(SpecError::FailedPrecondition(m)) => {
                assert!(
                    m.contains("\"my-prof\"") && m.contains("not enabled"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/my-prof".into(),
            ..Default::default()
        };
        assert!(matches!(
            profile(&old, &h, &view),
            Err(SpecError::FailedPrecondition(_))
        ));
        // Bad requests are refused whatever the node.
        assert!(matches!(
            profile(&sc(Some((ProfileType::Unconfined, "x"))), &h, &view),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn runtime_default_loads_crids_profile_once() {
        let h = host(true);
        let view = FakeHost::default();
        assert_eq!(
            profile(&sc(None), &h, &view).unwrap().as_deref(),
            Some(DEFAULT_PROFILE)
        );
        assert_eq!(view.apparmor_loads(), 1);
        assert_eq!(
            profile(&sc(Some((ProfileType::RuntimeDefault, ""))), &h, &view)
                .unwrap()
                .as_deref(),
            Some(DEFAULT_PROFILE)
        );
        // Already loaded: not loaded again.
        assert_eq!(view.apparmor_loads(), 1);
        // Privileged: none.
        let mut p = sc(None);
        p.privileged = true;
        assert_eq!(profile(&p, &h, &view).unwrap(), None);
        // Unconfined: none.
        assert_eq!(
            profile(&sc(Some((ProfileType::Unconfined, ""))), &h, &view).unwrap(),
            None
        );
    }

    #[test]
    fn a_failed_load_is_an_error() {
        let view = FakeHost::default().with_failing_apparmor_load();
        assert!(matches!(
            profile(&sc(None), &host(true), &view),
            Err(SpecError::Io { .. })
        ));
    }

    #[test]
    fn localhost_needs_a_loaded_profile() {
        let h = host(true);
        let view = FakeHost::default().with_apparmor_profile("my-prof");
        assert_eq!(
            profile(&sc(Some((ProfileType::Localhost, "my-prof"))), &h, &view)
                .unwrap()
                .as_deref(),
            Some("my-prof")
        );
        // Also when privileged, as containerd.
        let mut p = sc(Some((ProfileType::Localhost, "localhost/my-prof")));
        p.privileged = true;
        assert_eq!(profile(&p, &h, &view).unwrap().as_deref(), Some("my-prof"));
        match profile(&sc(Some((ProfileType::Localhost, "other"))), &h, &view) {
            Err(SpecError::InvalidArgument(m)) => assert!(m.contains("\"other\""), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loaded_profiles_are_parsed_by_name() {
        let list = "crid-default (enforce)\n/usr/bin/man (enforce)\ncrid-default-x (complain)\n";
        assert!(profile_listed(list, "crid-default"));
        assert!(profile_listed(list, "/usr/bin/man"));
        assert!(profile_listed(list, "crid-default-x"));
        assert!(!profile_listed(list, "crid"));
        assert!(!profile_listed(list, "man"));
    }

    #[test]
    fn default_profile_text_uses_what_the_distribution_has() {
        let bare = default_profile_text(PolicyFiles::default());
        assert!(bare.starts_with("@{PROC}=/proc/\n"), "{bare}");
        assert!(bare.contains("profile crid-default flags=(attach_disconnected,mediate_deleted) {"));
        assert!(bare.contains("  deny mount,\n"));
        assert!(bare.contains("deny @{PROC}/* w,"));
        assert!(!bare.contains("#include"));
        assert!(bare.trim_end().ends_with('}'));
        let full = default_profile_text(PolicyFiles {
            abi_3_0: true,
            tunables_global: true,
            abstractions_base: true,
        });
        assert!(full.starts_with("abi <abi/3.0>,\n#include <tunables/global>\n"));
        assert!(full.contains("  #include <abstractions/base>\n"));
        assert!(!full.contains("@{PROC}=/proc/"));
    }
}
