//! The systemd cgroup driver (`cgroup_driver = "systemd"`): a pod is a
//! systemd slice (the kubelet's `kubepods-…-pod<uid>.slice`, or crid's own
//! `crid-pod<id>.slice` when the kubelet gives none), its helper a transient
//! scope in that slice, its containers scopes runc makes (`slice:crid:<id>`,
//! runc's systemd cgroup path syntax). systemd owns those cgroups, so crid
//! never makes or removes their directories: it asks systemd over D-Bus
//! (`StartTransientUnit`, `StopUnit` on `org.freedesktop.systemd1.Manager`).
//! The D-Bus calls sit behind [`SystemdManager`] so the naming and the
//! sequence of calls are unit-tested against a recording fake.

use crate::error::{Error, Result};

/// One property of a transient unit (the subset crid sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitProperty {
    /// `Description`.
    Description(String),
    /// `Slice`: the slice the unit goes in.
    Slice(String),
    /// `PIDs`: the processes a scope adopts.
    Pids(Vec<u32>),
    /// `Delegate`: the unit's cgroup subtree is its processes' to manage.
    Delegate(bool),
    /// `DefaultDependencies`: false keeps the unit out of the shutdown
    /// ordering systemd adds by default (pods are stopped by the kubelet).
    DefaultDependencies(bool),
    /// `DevicePolicy`: `auto`, `closed` or `strict`.
    DevicePolicy(String),
    /// `DeviceAllow`: (device pattern, access) pairs.
    DeviceAllow(Vec<(String, String)>),
    /// One of systemd's `<X>Accounting` booleans (e.g. `IOAccounting`), on.
    Accounting(&'static str),
}

/// systemd's manager, as crid uses it.
pub trait SystemdManager: Send + Sync {
    /// Whether systemd answers (a Peer.Ping to org.freedesktop.systemd1).
    fn ping(&self) -> std::result::Result<(), String>;
    /// `StartTransientUnit(name, "fail", properties, [])`.
    fn start_transient_unit(
        &self,
        name: &str,
        properties: &[UnitProperty],
    ) -> std::result::Result<(), String>;
    /// `StopUnit(name, "fail")`; a unit that is not loaded is already stopped.
    fn stop_unit(&self, name: &str) -> std::result::Result<(), String>;
    /// `AttachProcessesToUnit(name, "", pids)`: more processes into a
    /// running scope (a restarted helper joining its pod's init).
    fn attach_processes(&self, name: &str, pids: &[u32]) -> std::result::Result<(), String>;
}

/// The system bus's systemd.
pub struct DbusSystemd {
    conn: zbus::blocking::Connection,
}

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

impl DbusSystemd {
    /// Connects to the system bus; an error when there is none (no systemd).
    pub fn connect() -> std::result::Result<DbusSystemd, String> {
        zbus::blocking::Connection::system()
            .map(|conn| DbusSystemd { conn })
            .map_err(|e| format!("connecting to the system D-Bus: {e}"))
    }
}

impl SystemdManager for DbusSystemd {
    fn ping(&self) -> std::result::Result<(), String> {
        self.conn
            .call_method(
                Some(DEST),
                PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .map(|_| ())
            .map_err(|e| format!("systemd does not answer on D-Bus: {e}"))
    }

    fn start_transient_unit(
        &self,
        name: &str,
        properties: &[UnitProperty],
    ) -> std::result::Result<(), String> {
        use zbus::zvariant::Value;
        let props: Vec<(&str, Value<'_>)> = properties
            .iter()
            .map(|p| match p {
                UnitProperty::Description(d) => ("Description", Value::from(d.as_str())),
                UnitProperty::Slice(s) => ("Slice", Value::from(s.as_str())),
                UnitProperty::Pids(pids) => ("PIDs", Value::from(pids.clone())),
                UnitProperty::Delegate(b) => ("Delegate", Value::from(*b)),
                UnitProperty::DefaultDependencies(b) => ("DefaultDependencies", Value::from(*b)),
                UnitProperty::DevicePolicy(p) => ("DevicePolicy", Value::from(p.as_str())),
                UnitProperty::Accounting(name) => (*name, Value::from(true)),
                UnitProperty::DeviceAllow(rules) => (
                    "DeviceAllow",
                    Value::from(
                        rules
                            .iter()
                            .map(|(d, a)| (d.as_str(), a.as_str()))
                            .collect::<Vec<_>>(),
                    ),
                ),
            })
            .collect();
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        self.conn
            .call_method(
                Some(DEST),
                PATH,
                Some(MANAGER),
                "StartTransientUnit",
                &(name, "fail", props, aux),
            )
            .map(|_| ())
            .map_err(|e| format!("StartTransientUnit {name}: {e}"))
    }

    fn attach_processes(&self, name: &str, pids: &[u32]) -> std::result::Result<(), String> {
        self.conn
            .call_method(
                Some(DEST),
                PATH,
                Some(MANAGER),
                "AttachProcessesToUnit",
                &(name, "", pids.to_vec()),
            )
            .map(|_| ())
            .map_err(|e| format!("AttachProcessesToUnit {name}: {e}"))
    }

    fn stop_unit(&self, name: &str) -> std::result::Result<(), String> {
        match self
            .conn
            .call_method(Some(DEST), PATH, Some(MANAGER), "StopUnit", &(name, "fail"))
        {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(err, _, _))
                if err.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(e) => Err(format!("StopUnit {name}: {e}")),
        }
    }
}

/// Refuses the systemd driver on a node where systemd cannot be asked: not
/// PID 1 (no /run/systemd/system) or not answering on the system bus.
pub fn check_reachable() -> std::result::Result<(), String> {
    check(std::path::Path::new("/run/systemd/system"), || {
        DbusSystemd::connect()?.ping()
    })
}

/// [`check_reachable`] with the marker dir and the D-Bus probe given.
fn check(
    marker: &std::path::Path,
    probe: impl FnOnce() -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    if !marker.is_dir() {
        return Err(
            "cgroup_driver = \"systemd\" needs systemd as the init system (PID 1), and /run/systemd/system does not exist here; use cgroup_driver = \"cgroupfs\""
                .into(),
        );
    }
    probe()
        .map_err(|e| format!("cgroup_driver = \"systemd\": {e}; use cgroup_driver = \"cgroupfs\""))
}

/// A pod's systemd units, as recorded with the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodUnits {
    /// The pod's slice.
    pub slice: String,
    /// Whether crid started the slice (no kubelet parent) and must stop it.
    pub own_slice: bool,
    /// The helper's scope, once started.
    pub helper_scope: Option<String>,
}

/// Whether `c` may appear in a unit name (systemd's allowed set).
fn unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\')
}

/// The pod's slice: the kubelet's `cgroup_parent` (a slice name with the
/// systemd driver) or `crid-pod<id>.slice`.
pub fn pod_slice(cgroup_parent: &str, sandbox_id: &str) -> Result<PodUnits> {
    if cgroup_parent.is_empty() {
        return Ok(PodUnits {
            slice: format!("crid-pod{sandbox_id}.slice"),
            own_slice: true,
            helper_scope: None,
        });
    }
    slice_path(cgroup_parent)?;
    Ok(PodUnits {
        slice: cgroup_parent.to_string(),
        own_slice: false,
        helper_scope: None,
    })
}

/// The cgroup path of slice `name` (systemd nests `a-b.slice` in
/// `a.slice`): `kubepods-besteffort-pod1.slice` →
/// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice`.
pub fn slice_path(name: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "cgroup_parent {name:?} is not a systemd slice name ({why}); the systemd cgroup driver expects e.g. kubepods-besteffort-pod<uid>.slice"
        ))
    };
    let Some(stem) = name.strip_suffix(".slice") else {
        return Err(bad("no .slice suffix"));
    };
    if name == "-.slice" {
        return Ok("/".into());
    }
    if stem.is_empty() || name.len() > 255 || !name.chars().all(unit_char) {
        return Err(bad("empty or with characters a unit name cannot hold"));
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(bad("a dash at an end or two in a row"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The cgroup path, relative to each cgroup mount, of a systemd-driver
/// cgroup: a slice name (`a-b.slice` → `/a.slice/a-b.slice`) or runc's
/// `slice:prefix:name` (→ `<slice path>/<prefix>-<name>.scope`, or
/// `<slice path>/<name>` when `name` is itself a slice; an empty slice is
/// runc's default, `system.slice`). Stats and `crid debug` read cgroup
/// files there; systemd names the units, cgroupfs sees these dirs.
pub fn cgroupfs_path(systemd_path: &str) -> Result<String> {
    let parts: Vec<&str> = systemd_path.split(':').collect();
    let (slice, prefix, name) = match parts.as_slice() {
        [slice] => return slice_path(slice),
        [slice, prefix, name] => (*slice, *prefix, *name),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{systemd_path:?} is neither a slice name nor slice:prefix:name"
            )))
        }
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    if name.is_empty() || unit.contains('/') || !unit.chars().all(unit_char) {
        return Err(Error::InvalidArgument(format!(
            "{systemd_path:?}: {unit:?} is not a unit name"
        )));
    }
    let parent = slice_path(if slice.is_empty() {
        "system.slice"
    } else {
        slice
    })?;
    Ok(format!("{}/{unit}", parent.trim_end_matches('/')))
}

/// The pod's cgroup path (its slice's), relative to each cgroup mount.
pub fn pod_cgroup_path(units: &PodUnits) -> Result<String> {
    slice_path(&units.slice)
}

/// The helper's scope's cgroup path, relative to each cgroup mount; None
/// before the scope is started.
pub fn helper_cgroup_path(units: &PodUnits) -> Result<Option<String>> {
    let Some(scope) = &units.helper_scope else {
        return Ok(None);
    };
    let slice = pod_cgroup_path(units)?;
    Ok(Some(format!("{}/{scope}", slice.trim_end_matches('/'))))
}

/// The helper's scope name.
pub fn helper_scope(sandbox_id: &str) -> String {
    format!("crid-pod-helper-{sandbox_id}.scope")
}

/// runc's systemd cgroups path for a container: `slice:prefix:name`, which
/// runc turns into scope `crid-<id>.scope` in the pod's slice.
pub fn container_cgroups_path(slice: &str, container_id: &str) -> String {
    format!("{slice}:crid:{container_id}")
}

/// Starts the pod's own slice (when crid names it); the kubelet's slice
/// already exists.
pub fn create_pod(mgr: &dyn SystemdManager, units: &PodUnits, sandbox_id: &str) -> Result<()> {
    if !units.own_slice {
        return Ok(());
    }
    mgr.start_transient_unit(
        &units.slice,
        &[
            UnitProperty::Description(format!("crid pod {sandbox_id}")),
            UnitProperty::DefaultDependencies(false),
        ],
    )
    .map_err(Error::Internal)
}

/// Moves the pod's helper (and its PID-namespace init, `pids[1..]`) into
/// the helper's scope in the pod's slice. A restarted helper joins the
/// scope that is still there (stopping it would kill the pod's init and
/// with it every container in the pod's PID namespace); a new scope is
/// started only when there is none (it ends with its last process).
pub fn place_helper(
    mgr: &dyn SystemdManager,
    units: &mut PodUnits,
    sandbox_id: &str,
    pids: &[u32],
) -> Result<()> {
    let scope = helper_scope(sandbox_id);
    if units.helper_scope.is_some()
        && mgr
            .attach_processes(&scope, &pids[..1.min(pids.len())])
            .is_ok()
    {
        return Ok(());
    }
    mgr.start_transient_unit(
        &scope,
        &[
            UnitProperty::Description(format!("crid pod helper of {sandbox_id}")),
            UnitProperty::Slice(units.slice.clone()),
            UnitProperty::Pids(pids.to_vec()),
            // The helper makes the pod's PID-namespace init its child.
            UnitProperty::Delegate(true),
            UnitProperty::DefaultDependencies(false),
        ]
        .into_iter()
        .chain(helper_device_properties())
        .chain(ACCOUNTING.map(UnitProperty::Accounting))
        .collect::<Vec<_>>(),
    )
    .map_err(Error::Internal)?;
    units.helper_scope = Some(scope);
    Ok(())
}

/// The helper scope's device properties: every device allowed (the helper
/// is crid's, not the pod's), and so systemd realizes the `devices`
/// controller (cgroup v1) for the pod's slice with the helper, before any
/// container. Without them the first container lost its devices cgroup:
/// runc's systemd driver starts a container's scope without device
/// properties, puts the process in the scope's devices cgroup itself and
/// only then sets `DevicePolicy`/`DeviceAllow`; systemd, realizing the
/// slice's devices cgroup for the first time, moved the process up to the
/// slice's. `runc kill --all` reads the scope's devices cgroup to find the
/// container's processes: it found none, and StopPodSandbox waited 30 s.
/// (containerd's CRI has a pause container take that first realization.)
fn helper_device_properties() -> [UnitProperty; 2] {
    [
        UnitProperty::DevicePolicy("auto".into()),
        UnitProperty::DeviceAllow(vec![
            ("char-*".into(), "rwm".into()),
            ("block-*".into(), "rwm".into()),
        ]),
    ]
}

/// The accounting the helper's scope asks for: what the kubelet asks for
/// its pod slices and runc for containers' scopes, so that systemd
/// realizes every controller it manages for the helper at once and the
/// helper is in its scope in each. Without it (systemd 252, hybrid host)
/// the scope had no blkio cgroup until the first container's scope asked
/// for block I/O accounting; systemd then made the scope's blkio dir but
/// left the helper (a delegated scope's process) in the slice's.
const ACCOUNTING: [&str; 4] = [
    "CPUAccounting",
    "MemoryAccounting",
    "TasksAccounting",
    "IOAccounting",
];

/// Stops the helper's scope and crid's own slice (both idempotent).
pub fn remove_pod(mgr: &dyn SystemdManager, units: &PodUnits) -> Result<()> {
    if let Some(scope) = &units.helper_scope {
        mgr.stop_unit(scope).map_err(Error::Internal)?;
    }
    if units.own_slice {
        mgr.stop_unit(&units.slice).map_err(Error::Internal)?;
    }
    Ok(())
}

/// A [`SystemdManager`] that records every call (tests).
#[cfg(test)]
#[derive(Default)]
pub struct RecordingSystemd {
    /// The calls, in order: `start NAME [props]` / `stop NAME`.
    pub calls: std::sync::Mutex<Vec<(String, String, Vec<UnitProperty>)>>,
    /// Unit names whose start fails.
    pub fail_start: Vec<String>,
    /// Unit names that no longer exist (attach fails).
    pub gone: Vec<String>,
}

#[cfg(test)]
impl SystemdManager for RecordingSystemd {
    fn ping(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    fn start_transient_unit(
        &self,
        name: &str,
        properties: &[UnitProperty],
    ) -> std::result::Result<(), String> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(("start".into(), name.into(), properties.to_vec()));
        }
        if self.fail_start.iter().any(|n| n == name) {
            return Err(format!("StartTransientUnit {name}: refused"));
        }
        Ok(())
    }
    fn stop_unit(&self, name: &str) -> std::result::Result<(), String> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(("stop".into(), name.into(), Vec::new()));
        }
        Ok(())
    }
    fn attach_processes(&self, name: &str, pids: &[u32]) -> std::result::Result<(), String> {
        if let Ok(mut c) = self.calls.lock() {
            c.push((
                "attach".into(),
                name.into(),
                vec![UnitProperty::Pids(pids.to_vec())],
            ));
        }
        if self.gone.iter().any(|n| n == name) {
            return Err(format!("AttachProcessesToUnit {name}: no such unit"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(m: &RecordingSystemd) -> Vec<(String, String, Vec<UnitProperty>)> {
        m.calls.lock().unwrap().clone()
    }

    #[test]
    fn slices_nest_by_dash() {
        assert_eq!(
            slice_path("kubepods-besteffort-pod1a2b.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice"
        );
        assert_eq!(slice_path("kubepods.slice").unwrap(), "/kubepods.slice");
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        for bad in [
            "/kubepods/pod1",
            "kubepods",
            "kube--pods.slice",
            "-kubepods.slice",
            "kubepods-.slice",
            "kube/pods.slice",
            ".slice",
        ] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_paths_map_to_their_cgroupfs_dirs() {
        // runc's scope for a container of a kubelet pod.
        assert_eq!(
            cgroupfs_path("kubepods-besteffort-pod1.slice:crid:c1").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crid-c1.scope"
        );
        // The same for what crid generates.
        assert_eq!(
            cgroupfs_path(&container_cgroups_path("crid-podabc.slice", "c1")).unwrap(),
            "/crid.slice/crid-podabc.slice/crid-c1.scope"
        );
        // A bare slice name; runc's empty slice; a slice as the unit; root.
        assert_eq!(
            cgroupfs_path("kubepods-burstable.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice"
        );
        assert_eq!(
            cgroupfs_path(":cri-containerd:x").unwrap(),
            "/system.slice/cri-containerd-x.scope"
        );
        assert_eq!(
            cgroupfs_path("kubepods.slice::kubepods-pod2.slice").unwrap(),
            "/kubepods.slice/kubepods-pod2.slice"
        );
        assert_eq!(cgroupfs_path("-.slice:p:n").unwrap(), "/p-n.scope");
        for bad in [
            "/kubepods/pod1/c1",
            "kubepods-pod1.slice:crid:",
            "kubepods-pod1.slice:crid:a/b",
            "a:b",
            "a.slice:b:c:d",
            "kube--pods.slice:crid:c1",
        ] {
            assert!(cgroupfs_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pod_and_its_helper_scope_have_cgroup_paths() {
        let mut u = pod_slice("kubepods-besteffort-pod1.slice", "abc").unwrap();
        assert_eq!(
            pod_cgroup_path(&u).unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
        );
        assert_eq!(helper_cgroup_path(&u).unwrap(), None);
        place_helper(&RecordingSystemd::default(), &mut u, "abc", &[1]).unwrap();
        assert_eq!(
            helper_cgroup_path(&u).unwrap().as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crid-pod-helper-abc.scope")
        );
        let root = PodUnits {
            slice: "-.slice".into(),
            own_slice: false,
            helper_scope: Some("crid-pod-helper-x.scope".into()),
        };
        assert_eq!(
            helper_cgroup_path(&root).unwrap().as_deref(),
            Some("/crid-pod-helper-x.scope")
        );
    }

    #[test]
    fn a_pod_without_parent_gets_crids_own_slice() {
        let u = pod_slice("", "abc").unwrap();
        assert_eq!(u.slice, "crid-podabc.slice");
        assert!(u.own_slice);
        assert_eq!(
            slice_path(&u.slice).unwrap(),
            "/crid.slice/crid-podabc.slice"
        );
        let u = pod_slice("kubepods-burstable-podx.slice", "abc").unwrap();
        assert!(!u.own_slice);
        assert!(pod_slice("/kubepods/burstable", "abc").is_err());
    }

    #[test]
    fn runc_gets_slice_prefix_name() {
        assert_eq!(
            container_cgroups_path("kubepods-pod1.slice", "c1"),
            "kubepods-pod1.slice:crid:c1"
        );
    }

    #[test]
    fn pod_lifecycle_calls_systemd_in_order() {
        let m = RecordingSystemd::default();
        let mut u = pod_slice("", "abc").unwrap();
        create_pod(&m, &u, "abc").unwrap();
        place_helper(&m, &mut u, "abc", &[42, 43]).unwrap();
        assert_eq!(u.helper_scope.as_deref(), Some("crid-pod-helper-abc.scope"));
        remove_pod(&m, &u).unwrap();
        let c = calls(&m);
        let names: Vec<(&str, &str)> = c.iter().map(|(k, n, _)| (k.as_str(), n.as_str())).collect();
        assert_eq!(
            names,
            [
                ("start", "crid-podabc.slice"),
                ("start", "crid-pod-helper-abc.scope"),
                ("stop", "crid-pod-helper-abc.scope"),
                ("stop", "crid-podabc.slice"),
            ]
        );
        let scope_props = &c[1].2;
        assert!(scope_props.contains(&UnitProperty::Slice("crid-podabc.slice".into())));
        assert!(scope_props.contains(&UnitProperty::Pids(vec![42, 43])));
        assert!(scope_props.contains(&UnitProperty::Delegate(true)));
        // Devices: all allowed, and named, so systemd realizes the slice's
        // v1 devices cgroup before runc's first container scope.
        assert!(scope_props.contains(&UnitProperty::DevicePolicy("auto".into())));
        // Accounting: every controller systemd manages, from the start.
        for a in [
            "CPUAccounting",
            "MemoryAccounting",
            "TasksAccounting",
            "IOAccounting",
        ] {
            assert!(scope_props.contains(&UnitProperty::Accounting(a)), "{a}");
        }
        assert!(scope_props.contains(&UnitProperty::DeviceAllow(vec![
            ("char-*".into(), "rwm".into()),
            ("block-*".into(), "rwm".into()),
        ])));
    }

    #[test]
    fn a_restarted_helper_joins_the_scope_its_pods_init_keeps() {
        let m = RecordingSystemd::default();
        let mut u = pod_slice("kubepods-pod1.slice", "abc").unwrap();
        place_helper(&m, &mut u, "abc", &[10, 11]).unwrap();
        place_helper(&m, &mut u, "abc", &[20, 11]).unwrap();
        let c = calls(&m);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[1].0, "attach");
        assert_eq!(c[1].2, vec![UnitProperty::Pids(vec![20])]);
        assert!(
            c.iter().all(|(k, _, _)| k != "stop"),
            "never stops the scope: {c:?}"
        );

        // The scope ended with its last process: a new one is started.
        let m = RecordingSystemd {
            gone: vec!["crid-pod-helper-abc.scope".into()],
            ..Default::default()
        };
        place_helper(&m, &mut u, "abc", &[30]).unwrap();
        let kinds: Vec<String> = calls(&m).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(kinds, ["attach", "start"]);
    }

    #[test]
    fn the_kubelets_slice_is_neither_made_nor_stopped() {
        let m = RecordingSystemd::default();
        let mut u = pod_slice("kubepods-besteffort-pod1.slice", "abc").unwrap();
        create_pod(&m, &u, "abc").unwrap();
        place_helper(&m, &mut u, "abc", &[7]).unwrap();
        remove_pod(&m, &u).unwrap();
        let names: Vec<String> = calls(&m)
            .into_iter()
            .map(|(k, n, _)| format!("{k} {n}"))
            .collect();
        assert_eq!(
            names,
            [
                "start crid-pod-helper-abc.scope",
                "stop crid-pod-helper-abc.scope"
            ]
        );
    }

    #[test]
    fn a_refused_scope_is_an_error_and_not_recorded() {
        let m = RecordingSystemd {
            fail_start: vec!["crid-pod-helper-abc.scope".into()],
            ..Default::default()
        };
        let mut u = pod_slice("", "abc").unwrap();
        assert!(place_helper(&m, &mut u, "abc", &[1]).is_err());
        assert_eq!(u.helper_scope, None);
    }

    #[test]
    fn no_systemd_is_refused_with_the_way_out() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("systemd/system");
        let err = check(&missing, || Ok(())).unwrap_err();
        assert!(err.contains("PID 1") && err.contains("cgroupfs"), "{err}");
        std::fs::create_dir_all(&missing).unwrap();
        let err = check(&missing, || Err("no bus".into())).unwrap_err();
        assert!(err.contains("no bus") && err.contains("cgroupfs"), "{err}");
        assert_eq!(check(&missing, || Ok(())), Ok(()));
    }
}
