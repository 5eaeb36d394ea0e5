//! What a container's security context asks for, for seccomp and for
//! AppArmor alike: the CRI `SecurityProfile` field when set, else the
//! deprecated string (`runtime/default`, `docker/default`, `unconfined`,
//! `localhost/<ref>`, empty = unset).
//!
//! Mirrors containerd's CRI plugin (`generateSecurityProfile` and the checks
//! at the top of `generateSeccompSpecOpts` / `generateApparmorSpecOpts`): the
//! field wins over the string, a `localhost_ref` with another type is an
//! error, an unknown type or string is an error, and a `localhost/` prefix on
//! a `localhost_ref` is trimmed.

use super::SpecError;
use crid_proto::cri::security_profile::ProfileType;
use crid_proto::cri::SecurityProfile;

/// Prefix of the deprecated `localhost/<ref>` strings.
const LOCALHOST_PREFIX: &str = "localhost/";

/// A requested profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Neither the field nor the string is set.
    Unset,
    /// The runtime's default profile.
    RuntimeDefault,
    /// No profile.
    Unconfined,
    /// A profile on the node: an absolute file path (seccomp) or a loaded
    /// profile's name (AppArmor); never empty.
    Localhost(String),
}

/// The request of `field` (the `SecurityProfile`), else of `deprecated` (the
/// old string field); `what` names the feature in errors ("seccomp").
pub fn requested(
    field: Option<&SecurityProfile>,
    deprecated: &str,
    what: &str,
) -> Result<Requested, SpecError> {
    let Some(p) = field else {
        return from_string(deprecated, what);
    };
    let kind = ProfileType::try_from(p.profile_type).map_err(|_| {
        SpecError::InvalidArgument(format!("unknown {what} profile type {}", p.profile_type))
    })?;
    if kind != ProfileType::Localhost && !p.localhost_ref.is_empty() {
        return Err(SpecError::InvalidArgument(format!(
            "{what} profile: localhost_ref {:?} is only allowed with type Localhost",
            p.localhost_ref
        )));
    }
    Ok(match kind {
        ProfileType::RuntimeDefault => Requested::RuntimeDefault,
        ProfileType::Unconfined => Requested::Unconfined,
        ProfileType::Localhost => {
            let r = p
                .localhost_ref
                .strip_prefix(LOCALHOST_PREFIX)
                .unwrap_or(&p.localhost_ref);
            if r.is_empty() {
                return Err(SpecError::InvalidArgument(format!(
                    "{what} profile of type Localhost without localhost_ref"
                )));
            }
            Requested::Localhost(r.to_string())
        }
    })
}

fn from_string(s: &str, what: &str) -> Result<Requested, SpecError> {
    match s {
        "" => Ok(Requested::Unset),
        "runtime/default" | "docker/default" => Ok(Requested::RuntimeDefault),
        "unconfined" => Ok(Requested::Unconfined),
        _ => match s.strip_prefix(LOCALHOST_PREFIX) {
            Some(r) if !r.is_empty() => Ok(Requested::Localhost(r.to_string())),
            _ => Err(SpecError::InvalidArgument(format!(
                "invalid {what} profile {s:?}: want runtime/default, unconfined or \
                 localhost/<profile>"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(t: i32, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t,
            localhost_ref: r.into(),
        }
    }

    fn invalid(r: Result<Requested, SpecError>) -> String {
        match r {
            Err(SpecError::InvalidArgument(m)) => m,
            other => panic!("want InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn the_field_wins_over_the_string() {
        let rd = sp(ProfileType::RuntimeDefault as i32, "");
        assert_eq!(
            requested(Some(&rd), "unconfined", "seccomp").unwrap(),
            Requested::RuntimeDefault
        );
        let un = sp(ProfileType::Unconfined as i32, "");
        assert_eq!(
            requested(Some(&un), "runtime/default", "seccomp").unwrap(),
            Requested::Unconfined
        );
        let lh = sp(ProfileType::Localhost as i32, "/p.json");
        assert_eq!(
            requested(Some(&lh), "", "seccomp").unwrap(),
            Requested::Localhost("/p.json".into())
        );
        // containerd trims a stray prefix on the new field too.
        let lh = sp(ProfileType::Localhost as i32, "localhost//p.json");
        assert_eq!(
            requested(Some(&lh), "", "seccomp").unwrap(),
            Requested::Localhost("/p.json".into())
        );
    }

    #[test]
    fn deprecated_strings() {
        let r = |s| requested(None, s, "seccomp").unwrap();
        assert_eq!(r(""), Requested::Unset);
        assert_eq!(r("runtime/default"), Requested::RuntimeDefault);
        assert_eq!(r("docker/default"), Requested::RuntimeDefault);
        assert_eq!(r("unconfined"), Requested::Unconfined);
        assert_eq!(
            r("localhost//a/b.json"),
            Requested::Localhost("/a/b.json".into())
        );
        assert_eq!(r("localhost/my-aa"), Requested::Localhost("my-aa".into()));
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let m = invalid(requested(None, "default", "seccomp"));
        assert!(m.contains("\"default\""), "{m}");
        invalid(requested(None, "localhost/", "apparmor"));
        let m = invalid(requested(Some(&sp(7, "")), "", "seccomp"));
        assert!(m.contains("unknown seccomp profile type 7"), "{m}");
        let m = invalid(requested(
            Some(&sp(ProfileType::RuntimeDefault as i32, "/x")),
            "",
            "apparmor",
        ));
        assert!(m.contains("only allowed with type Localhost"), "{m}");
        invalid(requested(
            Some(&sp(ProfileType::Localhost as i32, "")),
            "",
            "seccomp",
        ));
    }
}
