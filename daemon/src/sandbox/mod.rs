//! Pod sandboxes: records, name reservation, the helper's life, teardown.
//!
//! Every operation here is blocking (process spawns, mounts, CNI plugins) and
//! runs on tokio's blocking pool; a cancelled RPC therefore never leaves a
//! half-done Run behind: the blocking work completes or rolls itself back.
//! One supervisor thread per ready sandbox holds a control connection to the
//! helper; on EOF it starts a new helper that re-adopts the pinned namespaces.

pub mod files;
pub mod os;
pub mod record;
pub mod validate;

use crate::cgroups::{self, CgroupFs, Hierarchy, RealCgroupFs};
use crate::error::{Error, Result};
use crate::helper_client;
use crate::store::Store;
use crate::systemd_cgroups::{self, SystemdManager};
use crid_common::cni_exec::{pod_ips, CniInvocation};
use crid_common::config::Config;
use crid_common::protocol::{Adopt, HelperSpec, SetupReport};
use crid_proto::cri;
use record::{NamespaceModes, SandboxRecord, SandboxState, RECORD_VERSION};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (name, namespace, uid, attempt): what the kubelet reserves a sandbox by.
type NameKey = (String, String, String, u32);

/// The container spec annotation with the address of the pod helper's shim
/// socket (read by `containerd-shim-crid-v1 start`).
pub const SHIM_ADDRESS_ANNOTATION: &str = "io.crid.shim.address";

/// The shim command containerd runs for `io.containerd.crid.v1` pods: a
/// link to the helper binary, made by crid in its runtime dir.
pub const SHIM_BINARY_NAME: &str = "containerd-shim-crid-v1";

/// One sandbox in memory; its mutex serialises operations on it.
struct Entry {
    rec: Mutex<SandboxRecord>,
    /// Not listed nor readable by id (a RunPodSandbox still in progress:
    /// creation, then NRI's RunPodSandbox event); see [`Sandboxes::publish`].
    hidden: std::sync::atomic::AtomicBool,
}

impl Entry {
    fn new(rec: SandboxRecord, hidden: bool) -> Entry {
        Entry {
            rec: Mutex::new(rec),
            hidden: std::sync::atomic::AtomicBool::new(hidden),
        }
    }

    fn hidden(&self) -> bool {
        self.hidden.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// All sandboxes.
pub struct Sandboxes {
    config: Config,
    store: Store<SandboxRecord>,
    cgroupfs: Box<dyn CgroupFs>,
    hierarchies: Vec<Hierarchy>,
    os: Box<dyn os::TeardownOs>,
    helper: PathBuf,
    /// systemd's manager with the systemd cgroup driver; None: cgroupfs.
    systemd: Option<Box<dyn SystemdManager>>,
    inner: Mutex<Inner>,
    /// Told the id of a Ready sandbox that became NotReady on its own
    /// (its helper died and could not be restarted).
    on_not_ready: Mutex<Option<NotReadyHook>>,
}

/// See [`Sandboxes::set_on_not_ready`].
pub type NotReadyHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<Entry>>,
    names: HashMap<NameKey, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a lock must not wedge every later call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Points `link` at `helper` (replacing whatever was there).
fn link_shim_binary(link: &Path, helper: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(format!("linking {}: {e}", link.display()));
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if std::fs::read_link(link).ok().as_deref() == Some(helper) {
        return Ok(());
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(helper, link).map_err(io)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Sandboxes {
    /// Opens the store, reloads records, and re-attaches to live helpers
    /// (restarting dead ones for Ready sandboxes).
    pub fn open(config: &Config) -> Result<Arc<Sandboxes>> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::Internal(format!("reading mountinfo: {e}")))?;
        let me = Sandboxes::new(
            config,
            Box::new(RealCgroupFs),
            cgroups::hierarchies(&mountinfo),
            Box::new(os::RealOs),
        )?;
        let (records, bad) = me.store.load_all()?;
        for e in bad {
            tracing::error!(error = %e, "skipping unreadable sandbox record");
        }
        for mut rec in records {
            if rec.state == SandboxState::Creating {
                rec.state =
                    SandboxState::NotReady("crid restarted while creating the sandbox".into());
                me.store.put(&rec.id, &rec)?;
            }
            let id = rec.id.clone();
            let ready = rec.is_ready();
            let mut inner = lock(&me.inner);
            inner.names.insert(
                (
                    rec.name.clone(),
                    rec.namespace.clone(),
                    rec.uid.clone(),
                    rec.attempt,
                ),
                id.clone(),
            );
            let entry = Arc::new(Entry::new(rec, false));
            inner.by_id.insert(id.clone(), Arc::clone(&entry));
            drop(inner);
            if ready {
                tracing::info!(pod = %id, "re-attaching to the sandbox's helper");
                me.supervise(entry, None);
            }
        }
        Ok(me)
    }

    /// An empty set of sandboxes on the given OS layers (no records loaded).
    pub fn new(
        config: &Config,
        cgroupfs: Box<dyn CgroupFs>,
        hierarchies: Vec<Hierarchy>,
        os: Box<dyn os::TeardownOs>,
    ) -> Result<Arc<Sandboxes>> {
        let store = Store::open(&config.state_dir.join("sandboxes"), RECORD_VERSION)?;
        let helper = if config.sandbox.helper_path.as_os_str().is_empty() {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("crid-pod-helper")))
                .unwrap_or_else(|| PathBuf::from("/usr/local/bin/crid-pod-helper"))
        } else {
            config.sandbox.helper_path.clone()
        };
        if config
            .runtimes
            .values()
            .any(|h| h.runtime_type == crid_common::config::CRID_SHIM_RUNTIME_TYPE)
        {
            link_shim_binary(&config.runtime_dir.join(SHIM_BINARY_NAME), &helper)?;
        }
        let systemd: Option<Box<dyn SystemdManager>> = match config.cgroup_driver {
            crid_common::config::CgroupDriver::Cgroupfs => None,
            crid_common::config::CgroupDriver::Systemd => Some(Box::new(
                systemd_cgroups::DbusSystemd::connect().map_err(Error::Internal)?,
            )),
        };
        Ok(Arc::new(Sandboxes {
            config: config.clone(),
            store,
            cgroupfs,
            hierarchies,
            os,
            helper,
            systemd,
            inner: Mutex::new(Inner::default()),
            on_not_ready: Mutex::new(None),
        }))
    }

    fn entry(&self, id_or_prefix: &str) -> Result<Option<Arc<Entry>>> {
        let inner = lock(&self.inner);
        let id = crid_common::ids::resolve_prefix(
            "pod sandbox id",
            id_or_prefix,
            inner.by_id.keys().map(String::as_str),
        )?;
        Ok(id.and_then(|id| inner.by_id.get(id).cloned()))
    }

    /// Calls `hook` with the id of each Ready sandbox that turns NotReady
    /// by itself (container events tell the kubelet).
    pub fn set_on_not_ready(&self, hook: NotReadyHook) {
        *lock(&self.on_not_ready) = Some(hook);
    }

    /// RunPodSandbox: the sandbox id, and whether this call created it
    /// (false: the kubelet retried a Run of a Ready sandbox).
    pub fn run(self: &Arc<Self>, req: cri::RunPodSandboxRequest) -> Result<(String, bool)> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox without config".into()))?;
        let md = validate::config(&config, &req.runtime_handler, &self.config)?;
        let linux = config.linux.clone().unwrap_or_default();
        let ns = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let user_namespace = crate::userns::pod_userns(&ns)?;
        let key: NameKey = (
            md.name.clone(),
            md.namespace.clone(),
            md.uid.clone(),
            md.attempt,
        );
        let id = crid_common::ids::generate_id();
        // Reserve the name before any work. Lock order is always a record
        // before `inner`, so the existing record is looked at after `inner`
        // is released.
        let existing = {
            let mut inner = lock(&self.inner);
            match inner.names.get(&key) {
                Some(existing) => Some((existing.clone(), inner.by_id.get(existing).cloned())),
                None => {
                    inner.names.insert(key.clone(), id.clone());
                    None
                }
            }
        };
        if let Some((existing, entry)) = existing {
            if entry.is_some_and(|e| !e.hidden() && lock(&e.rec).is_ready()) {
                // The kubelet retrying a Run whose answer it lost.
                return Ok((existing, false));
            }
            return Err(Error::AlreadyExists(format!(
                "sandbox name {}_{}_{}_{} is reserved by sandbox {existing}",
                md.name, md.namespace, md.uid, md.attempt
            )));
        }
        tracing::Span::current().record("pod", id.as_str());
        let dir = self.config.runtime_dir.join("sandboxes").join(&id);
        let rec = SandboxRecord {
            id: id.clone(),
            name: md.name.clone(),
            namespace: md.namespace.clone(),
            uid: md.uid.clone(),
            attempt: md.attempt,
            state: SandboxState::Creating,
            torn_down: false,
            created_at: now_ns(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            runtime_handler: req.runtime_handler.clone(),
            hostname: config.hostname.clone(),
            log_directory: config.log_directory.clone(),
            namespace_modes: NamespaceModes {
                network: ns.network,
                pid: ns.pid,
                ipc: ns.ipc,
            },
            cgroup_parent: linux.cgroup_parent.clone(),
            cgroups: Default::default(),
            dir: dir.clone(),
            shm_mounted: false,
            cni: None,
            cni_result: None,
            ips: Vec::new(),
            helper_pid: None,
            reaper_pid: None,
            pod_resources: record::PodResources {
                overhead: linux.overhead.clone(),
                resources: linux.resources.clone(),
            },
            user_namespace,
            shim: self.shim_spec(&req.runtime_handler, &dir, &id),
            config: Some(config.clone()),
            systemd: None,
        };
        // Hidden until created (and, with NRI, until its RunPodSandbox event
        // passed: the caller publishes it).
        let entry = Arc::new(Entry::new(rec, true));
        lock(&self.inner)
            .by_id
            .insert(id.clone(), Arc::clone(&entry));
        let mut guard = RunGuard {
            sb: self,
            entry: &entry,
            key,
            armed: true,
        };
        let result = self.create(&entry, &config, &linux);
        match result {
            Ok(child) => {
                guard.armed = false;
                self.supervise(Arc::clone(&entry), Some(child));
                if !self.config.nri.enable {
                    entry
                        .hidden
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                Ok((id, true))
            }
            Err(e) => Err(e),
        }
    }

    /// The work of Run; every step records what it made before the next.
    fn create(
        &self,
        entry: &Arc<Entry>,
        config: &cri::PodSandboxConfig,
        linux: &cri::LinuxPodSandboxConfig,
    ) -> Result<std::process::Child> {
        let mut rec = lock(&entry.rec);
        self.store.put(&rec.id, &rec)?;
        let own = rec.own_namespaces();
        let io = |what: &str, dir: &Path| {
            let what = format!("{what} {}", dir.display());
            move |e: std::io::Error| Error::Internal(format!("{what}: {e}"))
        };
        std::fs::create_dir_all(rec.ns_dir()).map_err(io("creating", &rec.ns_dir()))?;

        if let Some(mgr) = &self.systemd {
            // systemd owns the cgroups: the pod's slice now, the helper's
            // scope once the helper has a pid (after set-up; see
            // ARCHITECTURE.md, "systemd cgroup driver").
            // Recorded first: a crash in between must not leave a unit
            // the record does not name (stopping an absent unit is fine).
            let units = systemd_cgroups::pod_slice(&linux.cgroup_parent, &rec.id)?;
            rec.systemd = Some(units.clone());
            self.store.put(&rec.id, &rec)?;
            systemd_cgroups::create_pod(mgr.as_ref(), &units, &rec.id)?;
        } else {
            // What will be made is recorded before it is made (removing a
            // dir that was never made is fine), so a crash of crid in the
            // middle leaves no cgroup the record does not name.
            let parent = cgroups::parent_components(&linux.cgroup_parent, &rec.id)?;
            rec.cgroups.created =
                cgroups::planned(self.cgroupfs.as_ref(), &self.hierarchies, &parent);
            self.store.put(&rec.id, &rec)?;
            let placement = cgroups::create(self.cgroupfs.as_ref(), &self.hierarchies, &parent)?;
            rec.cgroups = placement;
        }
        self.store.put(&rec.id, &rec)?;

        files::write(&rec.dir, config.dns_config.as_ref(), &rec.hostname, &[])
            .map_err(io("writing pod files in", &rec.dir))?;
        if own.ipc {
            files::mount_shm(&rec.dir, self.config.sandbox.shm_size_bytes)
                .map_err(io("mounting /dev/shm at", &rec.dir.join("shm")))?;
            rec.shm_mounted = true;
            self.store.put(&rec.id, &rec)?;
        }

        if own.net {
            let list = crid_common::cni_config::load_default(
                &self.config.cni.conf_dir,
                &self.config.cni.bin_dirs,
            )
            .map_err(|e| Error::FailedPrecondition(format!("network not ready: {e}")))?;
            let mut inv = CniInvocation::new(&list, &rec.id, &rec.ns_dir().join("net"));
            inv.bin_dirs = self.config.cni.bin_dirs.clone();
            inv.args = vec![
                ("K8S_POD_NAMESPACE".into(), rec.namespace.clone()),
                ("K8S_POD_NAME".into(), rec.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), rec.id.clone()),
                ("K8S_POD_UID".into(), rec.uid.clone()),
            ];
            inv.capability_args = capability_args(config);
            rec.cni = Some(inv);
            self.store.put(&rec.id, &rec)?;
        }

        let spec = rec.helper_spec(linux.sysctls.clone().into_iter().collect(), None);
        let (child, report) = self.start_helper(&rec, &spec)?;
        match report {
            SetupReport::Ready {
                pid,
                reaper_pid,
                cni_result,
                notes,
            } => {
                for n in notes {
                    tracing::info!(pod = %rec.id, "helper: {n}");
                }
                rec.helper_pid = Some(pid);
                rec.reaper_pid = reaper_pid;
                self.place_in_scope(&mut rec, pid)?;
                rec.ips = cni_result.as_ref().map(pod_ips).unwrap_or_default();
                rec.cni_result = cni_result;
                files::write(
                    &rec.dir,
                    config.dns_config.as_ref(),
                    &rec.hostname,
                    &rec.ips,
                )
                .map_err(io("writing pod files in", &rec.dir))?;
                // The CNI result is persisted before the sandbox is reported ready.
                rec.state = SandboxState::Ready;
                if let Err(e) = self.store.put(&rec.id, &rec) {
                    rec.state = SandboxState::NotReady("record not persisted".into());
                    return Err(e.into());
                }
                Ok(child)
            }
            SetupReport::Failed { message } => {
                let mut child = child;
                let _ = child.wait();
                Err(Error::Internal(format!(
                    "setting up the pod sandbox failed: {message}"
                )))
            }
        }
    }

    /// With the systemd driver: the helper (and the pod's PID-namespace
    /// init) into the helper's scope in the pod's slice.
    fn place_in_scope(&self, rec: &mut SandboxRecord, pid: u32) -> Result<()> {
        let (Some(mgr), Some(units)) = (&self.systemd, rec.systemd.as_mut()) else {
            return Ok(());
        };
        let pids: Vec<u32> = std::iter::once(pid).chain(rec.reaper_pid).collect();
        systemd_cgroups::place_helper(mgr.as_ref(), units, &rec.id, &pids)
    }

    fn start_helper(
        &self,
        rec: &SandboxRecord,
        spec: &HelperSpec,
    ) -> Result<(std::process::Child, SetupReport)> {
        let spec_path = rec.dir.join("helper.json");
        let body = serde_json::to_vec_pretty(spec).map_err(|e| Error::Internal(e.to_string()))?;
        // Whole or absent after a crash: the supervisor restarts a helper
        // from this file.
        crate::store::write_atomic(&spec_path, &body)?;
        helper_client::spawn(
            &self.helper,
            &spec_path,
            &rec.dir.join("helper.log"),
            Duration::from_secs(self.config.sandbox.setup_timeout_secs),
        )
        .map_err(Error::Internal)
    }

    /// Watches a ready sandbox's helper and restarts it when it dies: a
    /// task on crid's runtime (no thread per pod, issue 19: idle memory),
    /// or a thread where there is no runtime (unit tests).
    fn supervise(self: &Arc<Self>, entry: Arc<Entry>, child: Option<std::process::Child>) {
        let me = Arc::clone(self);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(me.supervisor_task(entry, child));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("helper-supervisor".into())
            .stack_size(256 * 1024)
            .spawn(move || me.supervisor(entry, child));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a helper supervisor thread");
        }
    }

    /// The sandbox's helper socket and pod id while it is ready.
    fn watched(entry: &Entry) -> Option<(PathBuf, String)> {
        let rec = lock(&entry.rec);
        rec.is_ready().then(|| (rec.socket(), rec.id.clone()))
    }

    /// [`Self::supervisor`] on the async runtime: the idle wait for the
    /// control connection's EOF is a read on the reactor; connecting and
    /// what follows a loss (waits, restarts) run on the blocking pool.
    async fn supervisor_task(
        self: Arc<Self>,
        entry: Arc<Entry>,
        mut child: Option<std::process::Child>,
    ) {
        let mut failures = 0u32;
        while let Some((socket, id)) = Self::watched(&entry) {
            let sock = socket.clone();
            let conn = tokio::task::spawn_blocking(move || {
                helper_client::connect(&sock, Duration::from_secs(2))
            })
            .await;
            if let Ok(Ok(s)) = conn {
                failures = 0;
                let async_conn = s
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixStream::from_std(s));
                if let Ok(mut s) = async_conn {
                    let mut buf = [0u8; 1];
                    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                }
            }
            let me = Arc::clone(&self);
            let e = Arc::clone(&entry);
            let lost = tokio::task::spawn_blocking(move || {
                let go_on = me.helper_lost(&e, &mut child, &mut failures, &socket, &id);
                (go_on, child, failures)
            })
            .await;
            match lost {
                Ok((true, c, f)) => (child, failures) = (c, f),
                _ => break,
            }
        }
    }

    fn supervisor(&self, entry: Arc<Entry>, mut child: Option<std::process::Child>) {
        let mut failures = 0u32;
        while let Some((socket, id)) = Self::watched(&entry) {
            // Hold a control connection; EOF means the helper is gone.
            if let Ok(mut s) = helper_client::connect(&socket, Duration::from_secs(2)) {
                failures = 0;
                let _ = s.set_read_timeout(None);
                let mut buf = [0u8; 1];
                let _ = std::io::Read::read(&mut s, &mut buf);
            }
            if !self.helper_lost(&entry, &mut child, &mut failures, &socket, &id) {
                break;
            }
        }
    }

    /// After the control connection ended: waits for a helper that is
    /// alive but not answering, or starts a new one. False when supervision
    /// ends (the sandbox is no longer ready, or the restart failed).
    fn helper_lost(
        &self,
        entry: &Entry,
        child: &mut Option<std::process::Child>,
        failures: &mut u32,
        socket: &std::path::Path,
        id: &str,
    ) -> bool {
        if let Some(mut c) = child.take() {
            let _ = c.wait();
        }
        let mut rec = lock(&entry.rec);
        if !rec.is_ready() {
            return false;
        }
        if rec.helper_pid.is_some_and(helper_client::helper_alive) {
            // Alive but not answering: give it a moment, then look again.
            drop(rec);
            *failures += 1;
            if *failures > 10 {
                if let Some(pid) = lock(&entry.rec).helper_pid {
                    let _ = helper_client::end(socket, Some(pid), None);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            return true;
        }
        tracing::warn!(pod = %id, "helper is gone; starting a new one that re-adopts the pod's namespaces");
        match self.readopt(&mut rec) {
            Ok(c) => {
                crate::own_metrics::get().helper_restarted();
                *child = Some(c);
                true
            }
            Err(e) => {
                tracing::error!(pod = %id, error = %e, "restarting the helper failed");
                rec.state =
                    SandboxState::NotReady(format!("helper died and could not be restarted: {e}"));
                let _ = self.store.put(&rec.id, &rec);
                drop(rec);
                let hook = lock(&self.on_not_ready).clone();
                if let Some(hook) = hook {
                    hook(id);
                }
                false
            }
        }
    }

    /// The shim part of a new sandbox's helper spec, when its handler is
    /// of type `io.containerd.crid.v1`.
    fn shim_spec(
        &self,
        handler: &str,
        dir: &std::path::Path,
        id: &str,
    ) -> Option<crid_common::protocol::ShimSpec> {
        let (_, h) = crate::runtime_handler::resolve(&self.config, handler).ok()?;
        (h.runtime_type == crid_common::config::CRID_SHIM_RUNTIME_TYPE).then(|| {
            let mut ttrpc = self.config.containerd.address.clone().into_os_string();
            ttrpc.push(".ttrpc");
            crid_common::protocol::ShimSpec {
                socket: record::shim_socket(dir, id),
                containerd_ttrpc: ttrpc.into(),
                namespace: self.config.containerd.namespace.clone(),
                native_exec: self.config.sandbox.native_exec,
            }
        })
    }

    /// The `containerd-shim-crid-v1` link (the runtime name containerd is
    /// given: an absolute path, so no PATH lookup is involved).
    pub fn shim_binary(&self) -> PathBuf {
        self.config.runtime_dir.join(SHIM_BINARY_NAME)
    }

    fn readopt(&self, rec: &mut SandboxRecord) -> Result<std::process::Child> {
        for (ns, wanted) in rec.pins() {
            if wanted && !is_ns_pin(&rec.ns_dir().join(ns)) {
                return Err(Error::Internal(format!(
                    "the pod's {ns} namespace pin is gone"
                )));
            }
        }
        let spec = rec.helper_spec(
            Default::default(),
            Some(Adopt {
                reaper_pid: rec.reaper_pid,
            }),
        );
        let (mut child, report) = self.start_helper(rec, &spec)?;
        match report {
            SetupReport::Ready { pid, .. } => {
                rec.helper_pid = Some(pid);
                self.place_in_scope(rec, pid)?;
                self.store.put(&rec.id, rec)?;
                Ok(child)
            }
            SetupReport::Failed { message } => {
                let _ = child.wait();
                Err(Error::Internal(message))
            }
        }
    }

    /// Releases everything of a sandbox; every step is idempotent. Marks the
    /// record NotReady("stopped") on success, NotReady(reason) otherwise.
    fn teardown(&self, rec: &mut SandboxRecord) -> Result<()> {
        if rec.torn_down {
            return Ok(());
        }
        // The pod's containers were stopped by cri::sandbox::stop before this
        // (containerd calls are async; this runs on the blocking pool).
        rec.state = SandboxState::NotReady("stopping".into());
        self.store.put(&rec.id, rec)?;
        let mut errors = Vec::new();
        if let Err(e) = self
            .os
            .end_helper(&rec.socket(), rec.helper_pid, rec.reaper_pid)
        {
            errors.push(e);
        }
        if let Some(shim) = &rec.shim {
            // Outside the sandbox dir when the dir is too deep for a socket.
            if let Err(e) = self.os.remove_file(&shim.socket) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("removing {}: {e}", shim.socket.display()));
                }
            }
        }
        // DEL always runs when the pod was meant to have a network: it is
        // idempotent, and ADD may have got further than anything recorded.
        if let Some(inv) = &rec.cni {
            if let Err(e) = self.os.cni_del(inv, rec.cni_result.as_ref()) {
                errors.push(format!("CNI DEL: {e}"));
            }
        }
        for (ns, _) in rec.pins() {
            let pin = rec.ns_dir().join(ns);
            if let Err(e) = self.os.unmount(&pin) {
                errors.push(format!("unpinning {}: {e}", pin.display()));
            } else if let Err(e) = self.os.remove_file(&pin) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("removing {}: {e}", pin.display()));
                }
            }
        }
        if let Err(e) = self.os.unmount(&rec.dir.join("shm")) {
            errors.push(format!("unmounting /dev/shm: {e}"));
        } else {
            rec.shm_mounted = false;
        }
        if let (Some(mgr), Some(units)) = (&self.systemd, &rec.systemd) {
            if let Err(e) = systemd_cgroups::remove_pod(mgr.as_ref(), units) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = cgroups::remove(self.cgroupfs.as_ref(), &rec.cgroups.created) {
            errors.push(e.to_string());
        } else if rec.cgroup_parent.is_empty() {
            // crid's own shared `/crid` parent: whichever pod leaves it empty
            // removes it (it may have been created by another pod).
            for leaf in &rec.cgroups.leaves {
                if let Some(shared) = leaf.parent().and_then(Path::parent) {
                    let _ = self.cgroupfs.rmdir(shared);
                }
            }
        }
        if errors.is_empty() {
            rec.torn_down = true;
            rec.helper_pid = None;
            rec.reaper_pid = None;
            rec.state = SandboxState::NotReady("stopped".into());
            self.store.put(&rec.id, rec)?;
            Ok(())
        } else {
            let reason = format!("teardown failed: {}", errors.join("; "));
            rec.state = SandboxState::NotReady(reason.clone());
            let _ = self.store.put(&rec.id, rec);
            Err(Error::Internal(reason))
        }
    }

    /// StopPodSandbox: idempotent; an unknown id (e.g. removed meanwhile)
    /// succeeds, as the CRI asks and containerd ≥ 1.6.35 does.
    pub fn stop(&self, id: &str) -> Result<()> {
        let Some(entry) = self.entry(id)? else {
            return Ok(());
        };
        let mut rec = lock(&entry.rec);
        tracing::Span::current().record("pod", rec.id.as_str());
        self.teardown(&mut rec)
    }

    /// RemovePodSandbox: stops if needed, removes files and the record; an
    /// unknown id succeeds.
    pub fn remove(&self, id: &str) -> Result<()> {
        let Some(entry) = self.entry(id)? else {
            return Ok(());
        };
        let mut rec = lock(&entry.rec);
        tracing::Span::current().record("pod", rec.id.as_str());
        self.teardown(&mut rec)?;
        // The pod's containers were removed by cri::sandbox::remove before
        // this (containerd calls are async; this runs on the blocking pool).
        if let Err(e) = std::fs::remove_dir_all(&rec.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                let reason = format!("removing {}: {e}", rec.dir.display());
                rec.state = SandboxState::NotReady(reason.clone());
                let _ = self.store.put(&rec.id, &rec);
                return Err(Error::Internal(reason));
            }
        }
        self.store.delete(&rec.id)?;
        let mut inner = lock(&self.inner);
        inner.by_id.remove(&rec.id);
        inner.names.remove(&(
            rec.name.clone(),
            rec.namespace.clone(),
            rec.uid.clone(),
            rec.attempt,
        ));
        Ok(())
    }

    /// A copy of a sandbox's record. A Ready sandbox whose namespace pins are
    /// gone (e.g. unmounted behind crid's back) is shown NotReady: Ready
    /// must mean the namespaces really exist. `Ok(None)`: no such sandbox;
    /// an empty or ambiguous id is an error.
    pub fn get(&self, id: &str) -> Result<Option<SandboxRecord>> {
        Ok(self
            .entry(id)?
            .filter(|e| !e.hidden())
            .map(|e| checked_pins(lock(&e.rec).clone())))
    }

    /// The record of a sandbox still hidden by [`Sandboxes::run`] (exact id).
    pub fn peek_hidden(&self, id: &str) -> Option<SandboxRecord> {
        let entry = lock(&self.inner).by_id.get(id).cloned()?;
        let rec = lock(&entry.rec).clone();
        Some(rec)
    }

    /// Makes a sandbox [`Sandboxes::run`] left hidden (NRI on) visible.
    pub fn publish(&self, id: &str) {
        if let Some(e) = lock(&self.inner).by_id.get(id) {
            e.hidden.store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// Undoes a RunPodSandbox whose NRI event failed: teardown, files,
    /// record and name reservation, as a failed creation.
    pub fn abort_run(&self, id: &str) {
        let Some(entry) = lock(&self.inner).by_id.get(id).cloned() else {
            return;
        };
        let key = {
            let rec = lock(&entry.rec);
            (
                rec.name.clone(),
                rec.namespace.clone(),
                rec.uid.clone(),
                rec.attempt,
            )
        };
        drop(RunGuard {
            sb: self,
            entry: &entry,
            key,
            armed: true,
        });
    }

    /// Like [`Sandboxes::get`] without waiting: `Err(Busy)` while an
    /// operation (Run, Stop, Remove, a helper restart) holds the sandbox;
    /// an unknown, empty or ambiguous id is `Ok(None)`.
    pub fn try_get(&self, id: &str) -> std::result::Result<Option<SandboxRecord>, Busy> {
        let Ok(Some(entry)) = self.entry(id) else {
            return Ok(None);
        };
        if entry.hidden() {
            return Ok(None);
        }
        let rec = match entry.rec.try_lock() {
            Ok(r) => r.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(Busy),
        };
        Ok(Some(checked_pins(rec)))
    }

    /// UpdatePodSandboxResources: records the pod-level resources
    /// (persisted); NotFound for an unknown sandbox.
    pub fn set_pod_resources(&self, id: &str, res: record::PodResources) -> Result<()> {
        let entry = self
            .entry(id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))?;
        let mut rec = lock(&entry.rec);
        let mut next = rec.clone();
        next.pod_resources = res;
        self.store.put(&next.id, &next)?;
        *rec = next;
        Ok(())
    }

    /// Copies of all records.
    pub fn all(&self) -> Vec<SandboxRecord> {
        let entries: Vec<_> = lock(&self.inner)
            .by_id
            .values()
            .filter(|e| !e.hidden())
            .cloned()
            .collect();
        entries.iter().map(|e| lock(&e.rec).clone()).collect()
    }
}

/// An operation holds the sandbox (see [`Sandboxes::try_get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// `rec`, shown NotReady if it says Ready but a namespace pin is gone.
fn checked_pins(mut rec: SandboxRecord) -> SandboxRecord {
    if rec.is_ready() {
        for (ns, wanted) in rec.pins() {
            if wanted && !is_ns_pin(&rec.ns_dir().join(ns)) {
                rec.state = SandboxState::NotReady(format!("the pod's {ns} namespace is gone"));
            }
        }
    }
    rec
}

/// Undoes a failed Run: teardown, files, record and name reservation.
struct RunGuard<'a> {
    sb: &'a Sandboxes,
    entry: &'a Arc<Entry>,
    key: NameKey,
    armed: bool,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut rec = lock(&self.entry.rec);
        if let Err(e) = self.sb.teardown(&mut rec) {
            // Keep it listed NotReady with the reason so the kubelet retries.
            tracing::error!(pod = %rec.id, error = %e, "undoing a failed RunPodSandbox");
            return;
        }
        let _ = std::fs::remove_dir_all(&rec.dir);
        let _ = self.sb.store.delete(&rec.id);
        let mut inner = lock(&self.sb.inner);
        inner.by_id.remove(&rec.id);
        inner.names.remove(&self.key);
    }
}

/// Whether `p` is a mounted namespace pin (an nsfs bind mount).
fn is_ns_pin(p: &Path) -> bool {
    // A pin's inode lives on nsfs; a leftover plain file does not.
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == 0x6e73_6673)
        .unwrap_or(false)
}

/// CNI capability args from the sandbox config.
fn capability_args(c: &cri::PodSandboxConfig) -> Map<String, Value> {
    let mut m = Map::new();
    let ports: Vec<Value> = c
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let proto = match p.protocol {
                1 => "udp",
                2 => "sctp",
                _ => "tcp",
            };
            let mut v = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto});
            if !p.host_ip.is_empty() {
                v["hostIP"] = json!(p.host_ip);
            }
            v
        })
        .collect();
    m.insert("portMappings".into(), Value::Array(ports));
    if let Some(dns) = &c.dns_config {
        m.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    let mut bw = Map::new();
    for (ann, key) in [
        ("kubernetes.io/ingress-bandwidth", "ingressRate"),
        ("kubernetes.io/egress-bandwidth", "egressRate"),
    ] {
        if let Some(rate) = c.annotations.get(ann).and_then(|v| parse_quantity(v)) {
            bw.insert(key.into(), json!(rate));
            let burst = if key == "ingressRate" {
                "ingressBurst"
            } else {
                "egressBurst"
            };
            // The kubelet's dockershim used an effectively unlimited burst.
            bw.insert(burst.into(), json!(i32::MAX));
        }
    }
    if !bw.is_empty() {
        m.insert("bandwidth".into(), Value::Object(bw));
    }
    m
}

/// A Kubernetes quantity like `10M` or `1Gi` as a number.
fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct OsLog {
        fail_del: AtomicBool,
        calls: Mutex<Vec<String>>,
    }

    struct FakeOs(Arc<OsLog>);

    impl os::TeardownOs for FakeOs {
        fn end_helper(
            &self,
            _socket: &Path,
            helper: Option<u32>,
            _reaper: Option<u32>,
        ) -> std::result::Result<(), String> {
            lock(&self.0.calls).push(format!("end {helper:?}"));
            Ok(())
        }
        fn cni_del(
            &self,
            inv: &CniInvocation,
            prev: Option<&Value>,
        ) -> std::result::Result<(), String> {
            lock(&self.0.calls).push(format!("del {} {}", inv.container_id, prev.is_some()));
            if self.0.fail_del.load(Ordering::SeqCst) {
                return Err("plugin bridge DEL failed: boom".into());
            }
            Ok(())
        }
        fn unmount(&self, p: &Path) -> std::io::Result<()> {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            lock(&self.0.calls).push(format!("umount {name}"));
            Ok(())
        }
        fn remove_file(&self, _p: &Path) -> std::io::Result<()> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    struct NoCgroups;

    impl CgroupFs for NoCgroups {
        fn exists(&self, _p: &Path) -> bool {
            false
        }
        fn mkdir(&self, _p: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn rmdir(&self, _p: &Path) -> std::io::Result<()> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn read(&self, _p: &Path) -> std::io::Result<String> {
            Ok(String::new())
        }
        fn write(&self, _p: &Path, _v: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn subdirs(&self, _p: &Path) -> std::io::Result<Vec<PathBuf>> {
            Ok(vec![])
        }
    }

    fn record(dir: &Path) -> SandboxRecord {
        let list = crid_common::cni_config::NetworkConfigList {
            file: "/x.conflist".into(),
            name: "n".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![json!({"type": "bridge"})],
        };
        SandboxRecord {
            id: "sb1".into(),
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            attempt: 0,
            state: SandboxState::Ready,
            torn_down: false,
            created_at: 1,
            labels: Default::default(),
            annotations: Default::default(),
            runtime_handler: String::new(),
            hostname: "p".into(),
            log_directory: String::new(),
            namespace_modes: NamespaceModes::default(),
            cgroup_parent: String::new(),
            cgroups: Default::default(),
            dir: dir.join("run/sandboxes/sb1"),
            shm_mounted: true,
            cni: Some(CniInvocation::new(&list, "sb1", &dir.join("ns/net"))),
            cni_result: Some(json!({"ips": []})),
            ips: vec!["10.0.0.2".into()],
            helper_pid: Some(4242),
            reaper_pid: None,
            pod_resources: Default::default(),
            user_namespace: None,
            shim: None,
            config: None,
            systemd: None,
        }
    }

    #[test]
    fn half_failed_teardown_is_recorded_and_retried_then_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            state_dir: d.path().join("state"),
            runtime_dir: d.path().join("run"),
            ..Config::default()
        };
        let log = Arc::new(OsLog::default());
        log.fail_del.store(true, Ordering::SeqCst);
        let sb = Sandboxes::new(
            &cfg,
            Box::new(NoCgroups),
            vec![],
            Box::new(FakeOs(log.clone())),
        )
        .unwrap();
        let mut rec = record(d.path());

        let err = sb.teardown(&mut rec).unwrap_err().to_string();
        assert!(
            err.contains("CNI DEL: plugin bridge DEL failed: boom"),
            "{err}"
        );
        assert!(!rec.torn_down);
        assert!(
            matches!(&rec.state, SandboxState::NotReady(r) if r.starts_with("teardown failed")),
            "{:?}",
            rec.state
        );
        // Every step ran despite the failure, helper first, DEL with prevResult.
        assert_eq!(
            *lock(&log.calls),
            vec![
                "end Some(4242)",
                "del sb1 true",
                "umount net",
                "umount uts",
                "umount ipc",
                "umount user",
                "umount shm"
            ]
        );
        let (stored, _) = sb.store.load_all().unwrap();
        assert_eq!(stored, vec![rec.clone()], "the failure is persisted");

        log.fail_del.store(false, Ordering::SeqCst);
        sb.teardown(&mut rec).unwrap();
        assert!(rec.torn_down);
        assert_eq!(rec.state, SandboxState::NotReady("stopped".into()));
        assert_eq!(rec.helper_pid, None);
        let calls = lock(&log.calls).len();
        sb.teardown(&mut rec).unwrap();
        assert_eq!(
            lock(&log.calls).len(),
            calls,
            "a torn-down sandbox is left alone"
        );
        assert_eq!(sb.store.load_all().unwrap().0, vec![rec]);
    }

    #[test]
    fn capability_args_from_config() {
        let mut c = cri::PodSandboxConfig::default();
        c.port_mappings.push(cri::PortMapping {
            protocol: 1,
            container_port: 53,
            host_port: 5353,
            host_ip: "10.0.0.1".into(),
        });
        c.port_mappings.push(cri::PortMapping {
            protocol: 0,
            container_port: 80,
            host_port: 0,
            host_ip: String::new(),
        });
        c.annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let m = capability_args(&c);
        assert_eq!(
            m["portMappings"],
            json!([{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"}])
        );
        assert_eq!(m["bandwidth"]["ingressRate"], 10_000_000);
        assert!(m.get("dns").is_none());
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("x"), None);
    }
}
