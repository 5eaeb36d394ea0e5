//! The container user: uid, gid and supplementary groups, from the security
//! context or else the image's `User`, names resolved in the image's
//! /etc/passwd and /etc/group.
//!
//! Mirrors containerd 1.6/1.7: `generateUserString` (CRI plugin), `oci.WithUser`,
//! `oci.WithAdditionalGIDs` with `ensureAdditionalGids` (the primary gid is also
//! an additional gid, the CVE-2023-25173 fix in 1.6.18/1.7.0) and
//! `customopts.WithSupplementalGroups` (merged, sorted, deduplicated).
//! One deliberate difference: containerd looks up supplementary groups for the
//! CRI `run_as_user` (uid 0 when unset) even when the image's `User` decides the
//! user; crid looks them up for the user that actually runs.

use super::SpecError;
use crid_proto::cri::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::User;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Read access to the image rootfs's /etc files (real impl: [`RootfsDir`]).
pub trait RootfsFiles {
    /// Contents of `/etc/<name>` in the image rootfs; `Ok(None)` when absent.
    fn etc_file(&self, name: &str) -> io::Result<Option<String>>;
}

/// One /etc/passwd entry (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// The `:`-separated fields of each meaningful line (comments, blank lines and
/// lines with fewer than `min` fields are skipped, like libcontainer/user).
fn records(text: &str, min: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(move |f| f.len() >= min)
}

/// Parses /etc/passwd, skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text, 4)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
            })
        })
        .collect()
}

/// Parses /etc/group, skipping malformed lines.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text, 3)
        .filter_map(|f| {
            let members = f.get(3).map_or_else(Vec::new, |m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            });
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members,
            })
        })
        .collect()
}

/// The user spec string containerd builds from the security context
/// (`generateUserString`): `name` or `uid`, plus `:gid` when run_as_group is set.
/// Empty means "not set by the kubelet".
pub fn user_string(sc: &LinuxContainerSecurityContext) -> Result<String, SpecError> {
    let mut user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else if let Some(u) = &sc.run_as_user {
        u.value.to_string()
    } else {
        String::new()
    };
    if let Some(g) = &sc.run_as_group {
        if user.is_empty() {
            return Err(SpecError::InvalidArgument(
                "run_as_group is set without run_as_user or run_as_username".into(),
            ));
        }
        user = format!("{user}:{}", g.value);
    }
    Ok(user)
}

/// Resolves the process user (uid, gid, additional gids).
pub fn resolve(
    sc: &LinuxContainerSecurityContext,
    image: &ImageConfig,
    rootfs: &dyn RootfsFiles,
) -> Result<User, SpecError> {
    let mut spec = user_string(sc)?;
    if spec.is_empty() {
        spec = image.user().clone().unwrap_or_default();
    }
    let passwd = Lazy::new(|| read(rootfs, "passwd").map(|t| t.map(|t| parse_passwd(&t))));
    let groups = Lazy::new(|| read(rootfs, "group").map(|t| t.map(|t| parse_group(&t))));

    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec.as_str(), None),
    };
    let (uid, username, passwd_gid) = if user_part.is_empty() {
        // No user anywhere: root, as containerd leaves the default spec's 0:0.
        let entry = passwd.get()?.as_ref().and_then(|p| by_uid(p, 0));
        (0, entry.map(|e| e.name.clone()), 0)
    } else if let Some(uid) = numeric_id(user_part, "user")? {
        // Numeric uid: the gid comes from its passwd entry if any, else 0
        // (oci.WithUserID).
        let entry = passwd.get()?.as_ref().and_then(|p| by_uid(p, uid));
        (
            uid,
            entry.map(|e| e.name.clone()),
            entry.map_or(0, |e| e.gid),
        )
    } else {
        let entry = passwd
            .get()?
            .as_ref()
            .and_then(|p| p.iter().find(|e| e.name == user_part))
            .ok_or_else(|| {
                SpecError::InvalidArgument(format!(
                    "user {user_part:?} not found in the image's /etc/passwd"
                ))
            })?;
        (entry.uid, Some(entry.name.clone()), entry.gid)
    };
    let gid = match group_part {
        None => passwd_gid,
        Some("") => {
            return Err(SpecError::InvalidArgument(format!(
                "invalid user {spec:?}: empty group"
            )))
        }
        Some(g) => match numeric_id(g, "group")? {
            Some(gid) => gid,
            None => {
                groups
                    .get()?
                    .as_ref()
                    .and_then(|gs| gs.iter().find(|e| e.name == g))
                    .ok_or_else(|| {
                        SpecError::InvalidArgument(format!(
                            "group {g:?} not found in the image's /etc/group"
                        ))
                    })?
                    .gid
            }
        },
    };

    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    if let (false, Some(name)) = (strict, &username) {
        if let Some(gs) = groups.get()? {
            additional.extend(
                gs.iter()
                    // Only supplementary groups: not the user's own-named group.
                    .filter(|g| &g.name != name && g.members.iter().any(|m| m == name))
                    .map(|g| g.gid),
            );
        }
    }
    for g in &sc.supplemental_groups {
        additional.push(u32::try_from(*g).map_err(|_| {
            SpecError::InvalidArgument(format!("supplemental group {g} is out of range"))
        })?);
    }
    additional.sort_unstable();
    additional.dedup();

    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(additional));
    Ok(user)
}

/// `Some(id)` for a decimal id, `None` for a name; negative or too large is an error.
fn numeric_id(s: &str, what: &str) -> Result<Option<u32>, SpecError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Ok(None);
    }
    s.parse::<u32>()
        .map(Some)
        .map_err(|_| SpecError::InvalidArgument(format!("{what} id {s} is out of range")))
}

fn by_uid(p: &[PasswdEntry], uid: u32) -> Option<&PasswdEntry> {
    p.iter().find(|e| e.uid == uid)
}

fn read(rootfs: &dyn RootfsFiles, name: &str) -> Result<Option<String>, SpecError> {
    rootfs
        .etc_file(name)
        .map_err(|e| SpecError::io(format!("reading the image's /etc/{name}"), e))
}

/// Reads a file at most once, on first use.
struct Lazy<T, F: Fn() -> Result<T, SpecError>> {
    cell: std::cell::OnceCell<T>,
    f: F,
}

impl<T, F: Fn() -> Result<T, SpecError>> Lazy<T, F> {
    fn new(f: F) -> Self {
        Lazy {
            cell: std::cell::OnceCell::new(),
            f,
        }
    }

    fn get(&self) -> Result<&T, SpecError> {
        if let Some(v) = self.cell.get() {
            return Ok(v);
        }
        let v = (self.f)()?;
        Ok(self.cell.get_or_init(|| v))
    }
}

/// The image rootfs as a directory on the host (a mounted snapshot).
///
/// Symlinks inside the image are resolved *within* the rootfs (an absolute link
/// target restarts at the rootfs, `..` never climbs above it), so an image whose
/// /etc/passwd links to a host path cannot make crid read host files.
pub struct RootfsDir(pub PathBuf);

/// Largest /etc/passwd or /etc/group crid reads from an image.
pub const MAX_ETC_FILE: u64 = 16 << 20;

/// Symlinks followed before giving up (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

impl RootfsDir {
    /// Host path of `inner` (absolute inside the rootfs), symlinks resolved in scope.
    pub fn resolve_in_root(&self, inner: &Path) -> io::Result<PathBuf> {
        let mut pending: Vec<std::ffi::OsString> = inner
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut resolved: Vec<std::ffi::OsString> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let mut candidate = self.0.clone();
            candidate.extend(&resolved);
            candidate.push(&part);
            match std::fs::symlink_metadata(&candidate) {
                Ok(md) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(io::Error::other("too many levels of symbolic links"));
                    }
                    let target = std::fs::read_link(&candidate)?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => pending.push(n.to_os_string()),
                            Component::ParentDir => pending.push("..".into()),
                            _ => {}
                        }
                    }
                }
                Ok(_) => resolved.push(part),
                // A missing component: the caller's open reports NotFound.
                Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(part),
                Err(e) => return Err(e),
            }
        }
        let mut out = self.0.clone();
        out.extend(&resolved);
        Ok(out)
    }
}

impl RootfsFiles for RootfsDir {
    fn etc_file(&self, name: &str) -> io::Result<Option<String>> {
        use std::io::Read;
        let path = self.resolve_in_root(&Path::new("/etc").join(name))?;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // The image is untrusted: never read an unbounded file into memory.
        let mut bytes = Vec::new();
        file.take(MAX_ETC_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_ETC_FILE {
            return Err(io::Error::other(format!(
                "/etc/{name} of the image is larger than {MAX_ETC_FILE} bytes"
            )));
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::FakeRootfs;
    use crid_proto::cri::Int64Value;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1::/:/sbin/nologin\n\
        broken line\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        nogroup-user:x:2000:2000::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        app:x:1001:app\n\
        audio:x:29:app, daemon\n\
        staff:x:50:\n";

    fn rootfs() -> FakeRootfs {
        FakeRootfs::new(Some(PASSWD), Some(GROUP))
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    fn image_user(u: &str) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.set_user(Some(u.into()));
        c
    }

    fn ids(u: &User) -> (u32, u32, Vec<u32>) {
        (
            u.uid(),
            u.gid(),
            u.additional_gids().clone().unwrap_or_default(),
        )
    }

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[2],
            PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1001
            }
        );
        let g = parse_group(GROUP);
        assert_eq!(g[3].members, vec!["app".to_string(), "daemon".to_string()]);
        assert!(g[4].members.is_empty());
    }

    #[test]
    fn default_is_root_with_roots_groups() {
        let u = resolve(&sc(), &ImageConfig::default(), &rootfs()).unwrap();
        // root is listed in wheel.
        assert_eq!(ids(&u), (0, 0, vec![0, 10]));
    }

    #[test]
    fn numeric_uid_takes_gid_from_passwd() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        let u = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 1001, vec![10, 29, 1001]));
    }

    #[test]
    fn numeric_uid_unknown_to_passwd_gets_gid_0() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 4242 });
        let u = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap();
        assert_eq!(ids(&u), (4242, 0, vec![0]));
        // Without any /etc/passwd at all, too.
        let empty = FakeRootfs::new(None, None);
        let u = resolve(&s, &ImageConfig::default(), &empty).unwrap();
        assert_eq!(ids(&u), (4242, 0, vec![0]));
    }

    #[test]
    fn uid_and_gid_from_security_context() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.run_as_group = Some(Int64Value { value: 3000 });
        let u = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap();
        // The user's own-named group (app, 1001) is not a supplementary group.
        assert_eq!(ids(&u), (1000, 3000, vec![10, 29, 3000]));
    }

    #[test]
    fn name_resolved_via_passwd() {
        let mut s = sc();
        s.run_as_username = "app".into();
        let u = resolve(&s, &image_user("daemon"), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 1001, vec![10, 29, 1001]));
    }

    #[test]
    fn image_user_applies_when_context_is_silent() {
        let u = resolve(&sc(), &image_user("daemon"), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1, 1, vec![1, 29]));
        let u = resolve(&sc(), &image_user("1000:50"), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 50, vec![10, 29, 50]));
    }

    #[test]
    fn group_name_via_group_file() {
        let u = resolve(&sc(), &image_user("app:staff"), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 50, vec![10, 29, 50]));
        let u = resolve(&sc(), &image_user("4000:audio"), &rootfs()).unwrap();
        assert_eq!(ids(&u), (4000, 29, vec![29]));
    }

    #[test]
    fn missing_user_or_group_is_an_error() {
        let mut s = sc();
        s.run_as_username = "ghost".into();
        let err = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap_err();
        assert!(matches!(&err, SpecError::InvalidArgument(m) if m.contains("ghost")));
        let err = resolve(&sc(), &image_user("app:ghosts"), &rootfs()).unwrap_err();
        assert!(matches!(&err, SpecError::InvalidArgument(m) if m.contains("ghosts")));
        // A name with no /etc/passwd in the image.
        let err = resolve(&sc(), &image_user("app"), &FakeRootfs::new(None, None)).unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(_)));
        let err = resolve(&sc(), &image_user("app:"), &rootfs()).unwrap_err();
        assert!(matches!(err, SpecError::InvalidArgument(_)));
    }

    #[test]
    fn group_without_user_is_an_error() {
        let mut s = sc();
        s.run_as_group = Some(Int64Value { value: 5 });
        assert!(matches!(
            resolve(&s, &ImageConfig::default(), &rootfs()),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: -1 });
        assert!(resolve(&s, &ImageConfig::default(), &rootfs()).is_err());
        s.run_as_user = Some(Int64Value {
            value: i64::from(u32::MAX) + 1,
        });
        assert!(resolve(&s, &ImageConfig::default(), &rootfs()).is_err());
        let mut s = sc();
        s.supplemental_groups = vec![-5];
        assert!(resolve(&s, &ImageConfig::default(), &rootfs()).is_err());
    }

    #[test]
    fn supplemental_groups_merge_sorted_and_deduplicated() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.supplemental_groups = vec![5000, 10, 1001];
        let u = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 1001, vec![10, 29, 1001, 5000]));
    }

    #[test]
    fn strict_policy_ignores_etc_group() {
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.supplemental_groups = vec![5000];
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let u = resolve(&s, &ImageConfig::default(), &rootfs()).unwrap();
        assert_eq!(ids(&u), (1000, 1001, vec![1001, 5000]));
    }

    #[test]
    fn rootfs_dir_resolves_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/passwd"), "app:x:7:8::/:/bin/sh\n").unwrap();
        // /etc -> /real (absolute: must land inside the rootfs, not the host's /real).
        std::os::unix::fs::symlink("/real", root.join("etc")).unwrap();
        // A host file an evil image points at.
        std::fs::write(dir.path().join("secret"), "root:x:0:0::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("../../../secret", root.join("real/group")).unwrap();
        let r = RootfsDir(root.clone());
        assert_eq!(
            r.etc_file("passwd").unwrap().as_deref(),
            Some("app:x:7:8::/:/bin/sh\n")
        );
        // ../../../secret clamps at the rootfs: /secret inside it does not exist.
        assert_eq!(r.etc_file("group").unwrap(), None);
        assert_eq!(
            r.resolve_in_root(Path::new("/etc/group")).unwrap(),
            root.join("secret")
        );
    }

    #[test]
    fn rootfs_dir_refuses_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let f = std::fs::File::create(dir.path().join("etc/passwd")).unwrap();
        f.set_len(MAX_ETC_FILE + 1).unwrap();
        let r = RootfsDir(dir.path().to_path_buf());
        assert!(r.etc_file("passwd").is_err());
        // A directory where the file should be is an error too, not "absent".
        std::fs::create_dir(dir.path().join("etc/group")).unwrap();
        assert!(r.etc_file("group").is_err());
    }

    #[test]
    fn rootfs_dir_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        assert!(RootfsDir(dir.path().to_path_buf())
            .etc_file("passwd")
            .is_err());
    }
}
