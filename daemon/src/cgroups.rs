//! Cgroupfs placement of a pod's helper: a leaf `crid-pod-helper` under the
//! sandbox's `cgroup_parent` in every cgroup v1 hierarchy and the cgroup2
//! mount (a v2 process may not sit in an inner cgroup that gets children).
//! crid makes the dirs (remembering exactly which it created, so removal
//! deletes those and nothing the kubelet made); the helper writes its own pid.
//! File operations go through [`CgroupFs`] so the path logic is unit-tested.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Name of the helper's leaf cgroup.
pub const HELPER_LEAF: &str = "crid-pod-helper";
/// Leaf under the pod's cgroup the pod's one containerd shim is placed in
/// (runc shim option `shim_cgroup`): the shim loads, not creates, it in
/// every hierarchy, so it is made with the pod.
pub const SHIM_LEAF: &str = "crid-shim";

/// The cgroup file operations crid needs.
pub trait CgroupFs: Send + Sync {
    /// Whether `p` exists.
    fn exists(&self, p: &Path) -> bool;
    /// Creates one directory.
    fn mkdir(&self, p: &Path) -> std::io::Result<()>;
    /// Removes one (empty) cgroup directory.
    fn rmdir(&self, p: &Path) -> std::io::Result<()>;
    /// Reads a control file.
    fn read(&self, p: &Path) -> std::io::Result<String>;
    /// Writes a control file.
    fn write(&self, p: &Path, v: &str) -> std::io::Result<()>;
    /// The child cgroups (subdirectories) of `p`.
    fn subdirs(&self, p: &Path) -> std::io::Result<Vec<PathBuf>>;
}

/// The real cgroupfs.
pub struct RealCgroupFs;

impl CgroupFs for RealCgroupFs {
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn mkdir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::create_dir(p)
    }
    fn rmdir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn read(&self, p: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn write(&self, p: &Path, v: &str) -> std::io::Result<()> {
        std::fs::write(p, v)
    }
    fn subdirs(&self, p: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.path());
            }
        }
        Ok(out)
    }
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Mount point.
    pub mount: PathBuf,
    /// v1 controllers (or `name=...`); empty for cgroup2.
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies in a mountinfo text (cgroup v1 and cgroup2).
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let superopts = fields.get(sep + 3).copied().unwrap_or("");
        let h = match *fstype {
            "cgroup2" => Hierarchy {
                mount: PathBuf::from(mount),
                controllers: Vec::new(),
            },
            "cgroup" => Hierarchy {
                mount: PathBuf::from(mount),
                controllers: superopts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                        ) && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "xattr"
                    })
                    .map(str::to_string)
                    .collect(),
            },
            _ => continue,
        };
        // A mount point mounted over (systemd in a container mounts
        // /sys/fs/cgroup again) reaches only the later mount.
        match out.iter_mut().find(|o: &&mut Hierarchy| o.mount == h.mount) {
            Some(seen) => *seen = h,
            None => out.push(h),
        }
    }
    out
}

/// Checks a `cgroup_parent` and returns its components; empty means crid's
/// own `/crid/<sandbox id>`.
pub fn parent_components(cgroup_parent: &str, sandbox_id: &str) -> Result<Vec<String>> {
    if cgroup_parent.is_empty() {
        return Ok(vec!["crid".into(), sandbox_id.into()]);
    }
    let mut comps = Vec::new();
    // Split by hand: Path::components would silently drop "." components.
    for c in cgroup_parent.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(Error::InvalidArgument(format!(
                "cgroup_parent {cgroup_parent:?} must be a plain cgroup path without . or .."
            )));
        }
        crid_common::ids::check_component("cgroup_parent component", c)?;
        comps.push(c.to_string());
    }
    if comps.is_empty() {
        return Err(Error::InvalidArgument(
            "cgroup_parent \"/\" would put the pod in the root cgroup".into(),
        ));
    }
    Ok(comps)
}

/// Where a helper was placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The helper's leaf dir in each hierarchy.
    pub leaves: Vec<PathBuf>,
    /// Dirs crid created, in creation order (removed in reverse).
    pub created: Vec<PathBuf>,
}

/// Creates `<parent>/crid-pod-helper` and `<parent>/crid-shim` in every
/// hierarchy. On error, what was created so far is removed again.
pub fn create(fs: &dyn CgroupFs, hs: &[Hierarchy], parent: &[String]) -> Result<Placement> {
    let mut placement = Placement::default();
    let r = (|| {
        for h in hs {
            // A shared ancestor (crid's own `/crid`) may be removed by another
            // pod's teardown between our check and our mkdir: walk again.
            let mut tries = 0;
            let leaf = loop {
                let made =
                    walk(fs, h, parent, HELPER_LEAF, &mut placement.created).and_then(|leaf| {
                        walk(fs, h, parent, SHIM_LEAF, &mut placement.created).map(|_| leaf)
                    });
                match made {
                    Ok(leaf) => break leaf,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "creating the helper cgroup in {}: {e}",
                            h.mount.display()
                        )))
                    }
                }
            };
            placement.leaves.push(leaf);
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(placement),
        Err(e) => {
            let _ = remove(fs, &placement.created);
            Err(e)
        }
    }
}

/// The dirs [`create`] would make for `parent` (those missing now), in
/// creation order. Recorded before they are made: a crash of crid between
/// the mkdirs and the record would otherwise leave cgroups nobody knows.
pub fn planned(fs: &dyn CgroupFs, hs: &[Hierarchy], parent: &[String]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for h in hs {
        for leaf in [HELPER_LEAF, SHIM_LEAF] {
            let mut dir = h.mount.clone();
            for comp in parent.iter().map(String::as_str).chain([leaf]) {
                dir.push(comp);
                if !fs.exists(&dir) && !dirs.contains(&dir) {
                    dirs.push(dir.clone());
                }
            }
        }
    }
    dirs
}

/// Makes the missing dirs of `<parent>/<leaf>` below one mount.
fn walk(
    fs: &dyn CgroupFs,
    h: &Hierarchy,
    parent: &[String],
    leaf: &str,
    created: &mut Vec<PathBuf>,
) -> std::io::Result<PathBuf> {
    let cpuset = h.controllers.iter().any(|c| c == "cpuset");
    let mut dir = h.mount.clone();
    for comp in parent.iter().map(String::as_str).chain([leaf]) {
        let parent_dir = dir.clone();
        dir.push(comp);
        if !fs.exists(&dir) {
            match fs.mkdir(&dir) {
                Ok(()) => created.push(dir.clone()),
                // Another pod's Run made the shared ancestor meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        if cpuset {
            // A v1 cpuset cgroup takes no task until cpus and mems are set;
            // inherit the parent's, as runc does. Checked on existing dirs
            // too: a concurrent Run may have made one and not filled it yet.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let mine = fs.read(&dir.join(f)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let v = fs.read(&parent_dir.join(f)).unwrap_or_default();
                    if !v.trim().is_empty() {
                        fs.write(&dir.join(f), v.trim())?;
                    }
                }
            }
        }
    }
    Ok(dir)
}

/// Removes the dirs crid created, deepest first; missing ones are fine. A
/// leaf still busy (the helper or the shim just exiting) is retried for a
/// few seconds. The pod's own cgroup (the leaves' parent) may still hold
/// container cgroups runc is removing, or that a lost task left empty: its
/// empty children are removed and it is retried, and failing is an error
/// (never a silently leaked cgroup). Any other ancestor that is not empty
/// holds another pod's cgroup and stays.
pub fn remove(fs: &dyn CgroupFs, created: &[PathBuf]) -> Result<()> {
    let is_leaf = |d: &Path| {
        d.file_name()
            .is_some_and(|n| n == HELPER_LEAF || n == SHIM_LEAF)
    };
    let pod_dirs: Vec<&Path> = created
        .iter()
        .filter(|d| is_leaf(d))
        .filter_map(|d| d.parent())
        .collect();
    let mut first_err = None;
    for dir in created.iter().rev() {
        let leaf = is_leaf(dir);
        let pod_dir = pod_dirs.contains(&dir.as_path());
        let mut tries = 0;
        loop {
            match fs.rmdir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e)
                    if !leaf
                        && !pod_dir
                        && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
                {
                    break
                }
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY))
                        && tries < 250 =>
                {
                    tries += 1;
                    if pod_dir {
                        remove_empty_children(fs, dir);
                    }
                    if tries == SHIM_GRACE_TRIES && dir.file_name().is_some_and(|n| n == SHIM_LEAF)
                    {
                        kill_left_shim(fs, dir);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    first_err.get_or_insert(Error::Internal(format!(
                        "removing cgroup {}: {e}",
                        dir.display()
                    )));
                    break;
                }
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Tries (20 ms apart) a pod's shim gets to exit by itself once its last
/// task is deleted before it is killed.
const SHIM_GRACE_TRIES: u32 = 100;

/// SIGKILLs what is still in a pod's shim leaf at teardown: every container
/// of the pod is stopped and its task deleted by then, so a shim still there
/// serves nothing (one a crash of crid cut half-way through its start or
/// its task's create, which containerd never shut down).
fn kill_left_shim(fs: &dyn CgroupFs, dir: &Path) {
    let procs = fs.read(&dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        tracing::warn!(pid, cgroup = %dir.display(), "killing a pod shim left without tasks");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the empty child cgroups of `dir`, deepest first (a child that
/// still holds a process stays).
fn remove_empty_children(fs: &dyn CgroupFs, dir: &Path) {
    for child in fs.subdirs(dir).unwrap_or_default() {
        remove_empty_children(fs, &child);
        let _ = fs.rmdir(&child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        dirs: Mutex<BTreeSet<PathBuf>>,
        files: Mutex<BTreeMap<PathBuf, String>>,
        fail_mkdir: Option<PathBuf>,
    }

    impl CgroupFs for Fake {
        fn exists(&self, p: &Path) -> bool {
            self.dirs.lock().unwrap().contains(p)
        }
        fn mkdir(&self, p: &Path) -> std::io::Result<()> {
            if self.fail_mkdir.as_deref() == Some(p) {
                return Err(std::io::Error::from_raw_os_error(13));
            }
            self.dirs.lock().unwrap().insert(p.to_path_buf());
            Ok(())
        }
        fn rmdir(&self, p: &Path) -> std::io::Result<()> {
            let mut dirs = self.dirs.lock().unwrap();
            if dirs.iter().any(|d| d.parent() == Some(p)) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOTEMPTY));
            }
            if dirs.remove(p) {
                Ok(())
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            }
        }
        fn subdirs(&self, p: &Path) -> std::io::Result<Vec<PathBuf>> {
            let dirs = self.dirs.lock().unwrap();
            Ok(dirs
                .iter()
                .filter(|d| d.parent() == Some(p))
                .cloned()
                .collect())
        }
        fn read(&self, p: &Path) -> std::io::Result<String> {
            self.files
                .lock()
                .unwrap()
                .get(p)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
        fn write(&self, p: &Path, v: &str) -> std::io::Result<()> {
            self.files.lock().unwrap().insert(p.to_path_buf(), v.into());
            Ok(())
        }
    }

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 25 0:31 / /proc rw - proc proc rw
";

    #[test]
    fn a_mount_point_mounted_over_counts_once_as_the_later_mount() {
        let over = format!(
            "{MOUNTINFO}40 30 0:40 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,name=x\n"
        );
        let hs = hierarchies(&over);
        let memory: Vec<_> = hs
            .iter()
            .filter(|h| h.mount == Path::new("/sys/fs/cgroup/memory"))
            .collect();
        assert_eq!(memory.len(), 1);
        assert_eq!(memory[0].controllers, vec!["memory", "name=x"]);
        assert_eq!(hs.len(), 4);
    }

    #[test]
    fn finds_v1_and_v2_hierarchies() {
        let hs = hierarchies(MOUNTINFO);
        let mounts: Vec<_> = hs.iter().map(|h| h.mount.display().to_string()).collect();
        assert_eq!(
            mounts,
            vec![
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert_eq!(hs[0].controllers, vec!["cpuset"]);
        assert_eq!(hs[2].controllers, vec!["name=systemd"]);
        assert!(hs[3].controllers.is_empty());
    }

    #[test]
    fn parent_paths_are_checked() {
        assert_eq!(parent_components("", "abc").unwrap(), vec!["crid", "abc"]);
        assert_eq!(
            parent_components("/kubepods/besteffort/pod1", "x").unwrap(),
            vec!["kubepods", "besteffort", "pod1"]
        );
        for bad in ["/", "/a/../b", "/a/./b", "/a b"] {
            assert!(parent_components(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn creates_only_missing_dirs_and_removes_exactly_those() {
        let fs = Fake::default();
        fs.dirs.lock().unwrap().extend([
            PathBuf::from("/sys/fs/cgroup/cpuset"),
            PathBuf::from("/sys/fs/cgroup/memory"),
            PathBuf::from("/sys/fs/cgroup/memory/kubepods"),
            PathBuf::from("/sys/fs/cgroup/systemd"),
            PathBuf::from("/sys/fs/cgroup/unified"),
        ]);
        fs.files
            .lock()
            .unwrap()
            .insert("/sys/fs/cgroup/cpuset/cpuset.cpus".into(), "0-1\n".into());
        fs.files
            .lock()
            .unwrap()
            .insert("/sys/fs/cgroup/cpuset/cpuset.mems".into(), "0\n".into());
        let hs = hierarchies(MOUNTINFO);
        let parent = parent_components("/kubepods/pod1", "x").unwrap();
        let plan = planned(&fs, &hs, &parent);
        let p = create(&fs, &hs, &parent).unwrap();
        assert_eq!(plan, p.created, "the plan names exactly what is made");
        assert_eq!(p.leaves.len(), 4);
        assert_eq!(
            p.leaves[1],
            PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/crid-pod-helper")
        );
        assert!(!p
            .created
            .contains(&PathBuf::from("/sys/fs/cgroup/memory/kubepods")));
        // Per hierarchy: the missing parents, then both leaves.
        assert_eq!(p.created.len(), 4 + 3 + 4 + 4);
        assert!(p.created.contains(&PathBuf::from(
            "/sys/fs/cgroup/cpuset/kubepods/pod1/crid-shim"
        )));
        let files = fs.files.lock().unwrap().clone();
        assert_eq!(
            files.get(Path::new(
                "/sys/fs/cgroup/cpuset/kubepods/pod1/crid-pod-helper/cpuset.cpus"
            )),
            Some(&"0-1".to_string())
        );
        assert_eq!(
            files.get(Path::new(
                "/sys/fs/cgroup/cpuset/kubepods/pod1/crid-shim/cpuset.mems"
            )),
            Some(&"0".to_string())
        );
        remove(&fs, &p.created).unwrap();
        assert!(fs.exists(Path::new("/sys/fs/cgroup/memory/kubepods")));
        assert_eq!(fs.dirs.lock().unwrap().len(), 5);
    }

    #[test]
    fn leftover_container_cgroups_in_the_pod_dir_are_removed_not_leaked() {
        let fs = Fake::default();
        for h in hierarchies(MOUNTINFO) {
            fs.dirs.lock().unwrap().insert(h.mount);
        }
        let parent = parent_components("", "sb").unwrap();
        let p = create(&fs, &hierarchies(MOUNTINFO), &parent).unwrap();
        // An empty container cgroup runc did not remove (a task lost while
        // containerd was down), with a child of its own.
        let ctr = PathBuf::from("/sys/fs/cgroup/memory/crid/sb/ctr1");
        fs.dirs.lock().unwrap().insert(ctr.clone());
        fs.dirs.lock().unwrap().insert(ctr.join("sub"));
        // Another pod keeps the shared /crid parent.
        fs.dirs
            .lock()
            .unwrap()
            .insert("/sys/fs/cgroup/memory/crid/other".into());
        remove(&fs, &p.created).unwrap();
        let dirs = fs.dirs.lock().unwrap();
        assert!(!dirs
            .iter()
            .any(|d| d.ends_with("sb") || d.starts_with(&ctr)));
        assert!(dirs.contains(Path::new("/sys/fs/cgroup/memory/crid")));
    }

    #[test]
    fn planned_dirs_removed_before_any_was_made_are_fine() {
        let fs = Fake::default();
        for h in hierarchies(MOUNTINFO) {
            fs.dirs.lock().unwrap().insert(h.mount);
        }
        let hs = hierarchies(MOUNTINFO);
        let parent = parent_components("", "sb").unwrap();
        let plan = planned(&fs, &hs, &parent);
        assert!(plan.contains(&PathBuf::from("/sys/fs/cgroup/unified/crid/sb/crid-shim")));
        // crid died after recording the plan, before (or while) making it.
        remove(&fs, &plan).unwrap();
        create(&fs, &hs, &parent).unwrap();
        remove(&fs, &plan).unwrap();
        assert_eq!(fs.dirs.lock().unwrap().len(), 4, "nothing left");
    }

    #[test]
    fn failed_create_undoes_itself() {
        let fs = Fake {
            fail_mkdir: Some("/sys/fs/cgroup/unified/crid".into()),
            ..Fake::default()
        };
        for h in hierarchies(MOUNTINFO) {
            fs.dirs.lock().unwrap().insert(h.mount);
        }
        let parent = parent_components("", "sb").unwrap();
        assert!(create(&fs, &hierarchies(MOUNTINFO), &parent).is_err());
        assert_eq!(fs.dirs.lock().unwrap().len(), 4);
    }
}
