//! CreateContainer, RemoveContainer, ContainerStatus and ListContainers:
//! CRI translation around [`crate::container::Containers`], the spec generator
//! and containerd.
//!
//! CreateContainer, step by step (each undone by [`CreateGuard`] on failure):
//! validate → sandbox Ready → reserve the name → resolve the image → prepare
//! the writable snapshot (key = container id, parent = the image's top-layer
//! chain id, under a short-lived lease) → create missing mount sources →
//! generate the OCI spec (the image's /etc mounted read-only only when user
//! resolution reads it) → create the containerd container referencing the
//! snapshot → persist the record `Created`.

use super::Crid;
use crate::container::ctrd::{self, NewContainer, SHIM_CGROUP_LEAF};
use crate::container::record::{ContainerRecord, ContainerState, ImageVolumeRecord, MountRecord};
use crate::container::{image_volume, rootfs, Containers, NameKey};
use crate::error::{Error, Result};
use crate::image::session::Session;
use crate::sandbox::record::SandboxRecord;
use crate::sandbox::validate::MODE_NODE;
use crate::spec::{self, validate as sv, PodUserns, SandboxFacts, SpecInputs};
use crid_proto::cri;
use crid_proto::cri::ContainerEventType;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The pod's cgroup dir relative to the cgroup mounts: `/crid/<sandbox id>`
/// by default, the `cgroup_parent`'s dirs under cgroupfs, the slice's
/// (`/kubepods.slice/…/kubepods-…-pod<uid>.slice`) under the systemd driver.
pub fn pod_cgroup(sb: &SandboxRecord) -> Result<String> {
    if let Some(units) = &sb.systemd {
        return crate::systemd_cgroups::pod_cgroup_path(units);
    }
    let comps = crate::cgroups::parent_components(&sb.cgroup_parent, &sb.id)?;
    Ok(format!("/{}", comps.join("/")))
}

/// Maps the sandbox record onto what the spec generator needs.
pub fn sandbox_facts(sb: &SandboxRecord, node_hostname: &str) -> Result<SandboxFacts> {
    let own = sb.own_namespaces();
    let host_network = sb.namespace_modes.network == MODE_NODE;
    let ns = sb.ns_dir();
    Ok(SandboxFacts {
        sandbox_id: sb.id.clone(),
        netns_path: own.net.then(|| ns.join("net")),
        ipc_ns_path: own.ipc.then(|| ns.join("ipc")),
        // The UTS namespace follows the network one (issue 4).
        uts_ns_path: own.net.then(|| ns.join("uts")),
        pid_ns_path: if own.pid {
            sb.reaper_pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid")))
        } else {
            None
        },
        hostname: if sb.hostname.is_empty() {
            node_hostname.to_string()
        } else {
            sb.hostname.clone()
        },
        etc_hosts_path: Some(sb.dir.join("hosts")),
        resolv_conf_path: Some(sb.dir.join("resolv.conf")),
        hostname_path: Some(sb.dir.join("hostname")),
        shm_path: sb.shm_mounted.then(|| sb.dir.join("shm")),
        // The systemd driver: the pod's slice (runc makes the container's scope).
        cgroup_parent: match &sb.systemd {
            Some(units) => units.slice.clone(),
            None => pod_cgroup(sb)?,
        },
        host_network,
        host_ipc: sb.namespace_modes.ipc == MODE_NODE,
        host_pid: sb.namespace_modes.pid == MODE_NODE,
        privileged: false,
        userns: sb.user_namespace.clone().map(|ns| PodUserns {
            path: ns_user_pin(sb),
            ns,
        }),
    })
}

/// Where the pod's user namespace is pinned.
pub fn ns_user_pin(sb: &SandboxRecord) -> PathBuf {
    sb.ns_dir().join("user")
}

/// The record of sandbox `id` (or unique prefix); NotFound otherwise.
pub async fn sandbox_of(crid: &Crid, id: &str) -> Result<SandboxRecord> {
    let sandboxes = Arc::clone(&crid.sandboxes);
    let key = id.to_string();
    tokio::task::spawn_blocking(move || sandboxes.get(&key))
        .await
        .map_err(|e| Error::Internal(format!("reading the sandbox: {e}")))??
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))
}

fn node_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Undoes a failed CreateContainer: containerd container, snapshot, record
/// and name reservation. Dropped while armed (a panic), it undoes in the
/// background.
struct CreateGuard {
    containers: Arc<Containers>,
    session: Session,
    key: NameKey,
    id: String,
    snapshotter: String,
    runtime_dir: PathBuf,
    armed: bool,
}

impl CreateGuard {
    async fn undo(mut self) {
        self.armed = false;
        undo(
            &self.containers,
            &self.session,
            &self.key,
            &self.id,
            &self.snapshotter,
            &self.runtime_dir,
        )
        .await;
    }
}

/// How often, and how far apart, a failed CreateContainer's undo tries to
/// remove its containerd objects (~15 s: a containerd restart).
const UNDO_TRIES: u32 = 30;
const UNDO_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

async fn undo(
    containers: &Containers,
    s: &Session,
    key: &NameKey,
    id: &str,
    snapshotter: &str,
    runtime_dir: &std::path::Path,
) {
    // A CreateContainer failed by containerd going away must still remove
    // its snapshot: retry while containerd comes back, holding the name, so
    // the orphan sweep after the reconnect (which skips reserved names)
    // is not the only chance.
    let mut tries = 0;
    while let Err(e) = ctrd::remove_all(s, id, snapshotter, id).await {
        tries += 1;
        if tries == UNDO_TRIES {
            tracing::error!(container = %id, error = %e, "undoing a failed CreateContainer");
            break;
        }
        tokio::time::sleep(UNDO_RETRY).await;
    }
    if let Err(e) = image_volume::cleanup(s, snapshotter, runtime_dir, id).await {
        tracing::error!(container = %id, error = %e, "undoing a failed CreateContainer's image volumes");
    }
    if let Err(e) = containers.delete(id) {
        tracing::error!(container = %id, error = %e, "deleting the record of a failed CreateContainer");
    }
    // Idmapped volumes may be attached there: never a blind recursive removal.
    if let Err(e) = crate::userns::rootfs::remove_container_dir(runtime_dir, id) {
        tracing::error!(container = %id, error = %e, "removing the runtime dir of a failed CreateContainer");
    }
    s.release().await;
    containers.release(key, id);
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (c, s, k, id, snap, dir) = (
            Arc::clone(&self.containers),
            self.session.clone(),
            self.key.clone(),
            self.id.clone(),
            self.snapshotter.clone(),
            self.runtime_dir.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { undo(&c, &s, &k, &id, &snap, &dir).await });
            }
            Err(_) => c.release(&k, &id),
        }
    }
}

/// `CreateContainer`. Runs as its own task, so a cancelled RPC cannot stop
/// it half-way: it completes or undoes itself.
pub async fn create(
    crid: Arc<Crid>,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse> {
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        create_inner(crid, req),
        span,
    ))
    .await
    .map_err(|e| Error::Internal(format!("CreateContainer task failed: {e}")))?
}

async fn create_inner(
    crid: Arc<Crid>,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse> {
    let config = req
        .config
        .ok_or_else(|| Error::InvalidArgument("CreateContainer without config".into()))?;
    let sandbox_config = req.sandbox_config.unwrap_or_default();
    let md = config
        .metadata
        .clone()
        .ok_or_else(|| Error::InvalidArgument("container config without metadata".into()))?;
    crid_common::ids::check_component("container name", &md.name)?;
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(Error::InvalidArgument(
            "container config without image".into(),
        ));
    }
    for m in &config.mounts {
        sv::container_path(&m.container_path)?;
        if m.image.is_some() {
            image_volume::validate(m)?;
        } else {
            sv::host_path(&m.host_path)?;
        }
    }
    // A bad seccomp or AppArmor request (missing profile file, ...) fails
    // here, before a name, snapshot or containerd object exists.
    let (cfg, host) = (config.clone(), crid.containers.host.clone());
    tokio::task::spawn_blocking(move || {
        spec::check_security_profiles(&cfg, &host, &spec::SystemHost)
    })
    .await
    .map_err(|e| Error::Internal(format!("security profile check failed: {e}")))??;

    let sb = sandbox_of(&crid, &req.pod_sandbox_id).await?;
    // Held until the container exists (or is undone): the pod's teardown
    // waits, so no container outlives its pod. Re-read under the lock.
    let _pod = crid.pod_locks.shared(&sb.id).await;
    let sb = sandbox_of(&crid, &sb.id).await?;
    tracing::Span::current().record("pod", sb.id.as_str());
    if !sb.is_ready() {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sb.id
        )));
    }
    let log_path = sv::log_path(&sb.log_directory, &config.log_path)?;
    crate::userns::check_container(
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref()),
        sb.user_namespace.as_ref(),
    )?;

    // Reserve the name before any work.
    let id = crid_common::ids::generate_id();
    tracing::Span::current().record("container", id.as_str());
    let key: NameKey = (sb.id.clone(), md.name.clone(), md.attempt);
    crid.containers.reserve(key.clone(), &id)?;
    let snapshotter = crid.config.containerd.snapshotter.clone();
    // The lease keeps the snapshot from containerd's GC until the container
    // references it.
    let session = match Session::leased(&crid.containerd, format!("crid-create-{id}")).await {
        Ok(s) => s,
        Err(e) => {
            crid.containers.release(&key, &id);
            return Err(e);
        }
    };
    let guard = CreateGuard {
        containers: Arc::clone(&crid.containers),
        session: session.clone(),
        key,
        id: id.clone(),
        snapshotter: snapshotter.clone(),
        runtime_dir: crid.config.runtime_dir.clone(),
        armed: true,
    };
    match create_steps(
        &crid,
        &session,
        &id,
        &sb,
        &config,
        &sandbox_config,
        &image_name,
        log_path,
    )
    .await
    {
        Ok(()) => {
            let mut guard = guard;
            guard.armed = false;
            session.release().await;
            if let Ok(Some(rec)) = crid.containers.get(&id) {
                super::events::container(&crid, &rec, ContainerEventType::ContainerCreatedEvent)
                    .await;
                crate::nri::notify_container(
                    &crid,
                    crid_proto::nri::Event::PostCreateContainer,
                    &rec,
                )
                .await;
            }
            Ok(cri::CreateContainerResponse { container_id: id })
        }
        Err(e) => {
            guard.undo().await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn create_steps(
    crid: &Crid,
    session: &Session,
    id: &str,
    sb: &SandboxRecord,
    config: &cri::ContainerConfig,
    sandbox_config: &cri::PodSandboxConfig,
    image_name: &str,
    log_path: Option<PathBuf>,
) -> Result<()> {
    let group = crid
        .images
        .index()
        .find(image_name)
        .await?
        .ok_or_else(|| ctrd::image_not_found(image_name))?;
    let meta = Arc::clone(&group.meta);
    tracing::Span::current().record("image", meta.id.as_str());
    let chain_id = meta.chain_id.clone().ok_or_else(|| {
        Error::FailedPrecondition(format!("image {image_name:?} has no layers to run"))
    })?;
    let image_config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&meta.config_raw).map_err(|e| {
            Error::Internal(format!("image {} has an unreadable config: {e}", meta.id))
        })?;
    // The config's stop signal wins over the image's STOPSIGNAL.
    let stop_signal = crate::container::exit::configured_stop_signal(
        config.stop_signal,
        image_config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone()),
    );
    let image_ref = group
        .repo_digests()
        .into_iter()
        .next()
        .unwrap_or_else(|| meta.id.clone());

    let snapshotter = crid.config.containerd.snapshotter.clone();
    let mounts = ctrd::prepare_snapshot(session, &snapshotter, id, &chain_id).await?;
    let (config, volumes) = resolve_image_volumes(crid, session, id, config).await?;
    let config = &config;

    // Spec generation reads host paths and may mount the image: blocking.
    let facts = sandbox_facts(sb, &node_hostname())?;
    let target_pid_ns = super::container_update::target_pid_ns(crid, &sb.id, config).await?;
    let host = crid.containers.host.clone();
    let recursive_read_only = crate::runtime_handler::features_of(
        &crid.config,
        &crid.handler_features,
        &sb.runtime_handler,
    )
    .recursive_read_only;
    let view = rootfs::view_dir(&crid.config.runtime_dir, id);
    // In a user namespace, crid mounts the idmapped rootfs there at start.
    let rootfs_path = sb
        .user_namespace
        .is_some()
        .then(|| crate::userns::rootfs::target(&crid.config.runtime_dir, id));
    // The kubelet's idmapped volumes: crid attaches idmapped clones itself.
    let mut cfg = config.clone();
    let idmapped = crate::userns::volumes::take(&mut cfg, sb.user_namespace.as_ref())?;
    let (runtime_dir, userns_pin) = (crid.config.runtime_dir.clone(), ns_user_pin(sb));
    let (cid, cfg, scfg, iname) = (
        id.to_string(),
        cfg,
        sandbox_config.clone(),
        image_name.to_string(),
    );
    let span = tracing::Span::current();
    let spec = tokio::task::spawn_blocking(move || -> Result<oci_spec::runtime::Spec> {
        let _e = span.enter();
        for m in &cfg.mounts {
            if sv::host_path_action(&sv::SystemStat, std::path::Path::new(&m.host_path))?
                == sv::HostPathAction::CreateDirectory
            {
                std::fs::create_dir_all(&m.host_path).map_err(|e| {
                    Error::Internal(format!("creating mount source {}: {e}", m.host_path))
                })?;
            }
        }
        let rootfs = rootfs::SnapshotRootfs::new(mounts, view);
        let inputs = SpecInputs {
            container_id: &cid,
            config: &cfg,
            sandbox_config: &scfg,
            image_config: image_config.config().as_ref(),
            image_name: &iname,
            sandbox: &facts,
            host: &host,
            target_pid_ns_path: target_pid_ns.as_deref(),
            recursive_read_only,
            rootfs_path: rootfs_path.as_deref(),
        };
        let mut spec = spec::generate(&inputs, &spec::SystemHost, &rootfs)?;
        crate::userns::volumes::mount(&mut spec, &idmapped, &runtime_dir, &cid, &userns_pin)?;
        Ok(spec)
    })
    .await
    .map_err(|e| Error::Internal(format!("spec generation task failed: {e}")))??;

    // NRI: plugins see the container and adjust its spec. Held from the
    // event until the record exists (see crate::nri).
    let _nri_sync = crid.nri.block_sync().await;
    let mut spec = nri_create(crid, id, sb, config, spec).await?;
    let (_, handler) = crate::runtime_handler::resolve(&crid.config, &sb.runtime_handler)
        .map_err(|e| Error::FailedPrecondition(format!("pod sandbox {}: {e}", sb.id)))?;
    let (runtime, shim_cgroup) = match &sb.shim {
        // The pod's helper is its shim: containerd runs the shim link, whose
        // `start` reads the helper's address from this annotation. The
        // helper already lives in the pod's cgroup.
        Some(shim) => {
            let mut annotations = spec.annotations().clone().unwrap_or_default();
            annotations.insert(
                crate::sandbox::SHIM_ADDRESS_ANNOTATION.to_string(),
                format!("unix://{}", shim.socket.display()),
            );
            spec.set_annotations(Some(annotations));
            (
                crid.sandboxes.shim_binary().display().to_string(),
                String::new(),
            )
        }
        // With the systemd driver the shim stays where containerd starts it
        // (systemd owns the pod's slice; a scope needs a pid to exist).
        None => (
            ctrd::RUNTIME.to_string(),
            match &sb.systemd {
                Some(_) => String::new(),
                None => format!("{}/{SHIM_CGROUP_LEAF}", pod_cgroup(sb)?),
            },
        ),
    };
    let spec_any = spec::to_containerd_any(&spec)?;
    // The runc v2 shim groups containers into one shim per value of the spec
    // annotation io.kubernetes.cri.sandbox-id (the generator sets it), so all
    // containers of a pod share one shim.
    ctrd::create_container(
        session,
        NewContainer {
            id,
            image: image_name,
            spec: spec_any,
            runtime,
            runtime_options: crate::runtime_handler::runc_options(
                handler,
                &shim_cgroup,
                crid.config.cgroup_driver == crid_common::config::CgroupDriver::Systemd,
            ),
            snapshotter: &snapshotter,
            labels: HashMap::from([
                (spec::annotations::SANDBOX_ID.to_string(), sb.id.clone()),
                (
                    "io.cri-containerd.kind".to_string(),
                    "container".to_string(),
                ),
            ])
            .into_iter()
            .chain(volumes.keys().map(|n| {
                (
                    image_volume::gc_label(&snapshotter, *n),
                    image_volume::snapshot_key(id, *n),
                )
            }))
            .collect(),
        },
    )
    .await?;

    let md = config.metadata.clone().unwrap_or_default();
    let rec = ContainerRecord {
        id: id.to_string(),
        sandbox_id: sb.id.clone(),
        name: md.name,
        attempt: md.attempt,
        state: ContainerState::Created,
        created_at: now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: image_name.to_string(),
        image_id: meta.id.clone(),
        image_ref,
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        mounts: config
            .mounts
            .iter()
            .enumerate()
            .map(|(n, m)| MountRecord {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: m.propagation,
                image: volumes.get(&n).cloned(),
            })
            .collect(),
        log_path,
        snapshotter,
        snapshot_key: id.to_string(),
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        spec: serde_json::to_value(&spec)
            .map_err(|e| Error::Internal(format!("encoding the spec: {e}")))?,
        stop_signal,
        pid: None,
        oom_killed: false,
        config: Some(config.clone()),
    };
    crid.containers.put(rec)
}

/// NRI CreateContainer: the plugins' adjustments applied to `spec`, their
/// updates and evictions of other containers carried out. A plugin's error
/// fails the creation (the caller undoes it).
async fn nri_create(
    crid: &Crid,
    id: &str,
    sb: &SandboxRecord,
    config: &cri::ContainerConfig,
    spec: oci_spec::runtime::Spec,
) -> Result<oci_spec::runtime::Spec> {
    if !crid.nri.enabled() {
        return Ok(spec);
    }
    let mut value = serde_json::to_value(&spec)
        .map_err(|e| Error::Internal(format!("encoding the spec: {e}")))?;
    let md = config.metadata.clone().unwrap_or_default();
    let (labels, annotations): (BTreeMap<_, _>, BTreeMap<_, _>) = (
        config.labels.clone().into_iter().collect(),
        config.annotations.clone().into_iter().collect(),
    );
    let base = crate::nri::convert::ContainerBase {
        id,
        sandbox_id: &sb.id,
        name: &md.name,
        state: crid_proto::nri::ContainerState::ContainerUnknown,
        labels: &labels,
        annotations: &annotations,
    };
    let result = crid
        .nri
        .create_container(
            sb,
            &base,
            &mut value,
            crid.containers.host.own_oom_score_adj,
        )
        .await?;
    let spec = if result.adjusted {
        serde_json::from_value(value).map_err(|e| {
            Error::InvalidArgument(format!("NRI adjustments made the spec invalid: {e}"))
        })?
    } else {
        spec
    };
    crate::nri::apply_updates(crid, result.update, result.evict).await;
    Ok(spec)
}

/// Turns every image volume of `config` into a read-only bind of its
/// prepared view (see [`image_volume`]); returns the rewritten config and,
/// by mount index, what ContainerStatus reports for each volume.
async fn resolve_image_volumes(
    crid: &Crid,
    session: &Session,
    id: &str,
    config: &cri::ContainerConfig,
) -> Result<(cri::ContainerConfig, BTreeMap<usize, ImageVolumeRecord>)> {
    let mut config = config.clone();
    let mut volumes = BTreeMap::new();
    let snapshotter = &crid.config.containerd.snapshotter;
    for (n, m) in config.mounts.iter_mut().enumerate() {
        let Some(image) = m.image.take() else {
            continue;
        };
        let group = crid
            .images
            .index()
            .find(&image.image)
            .await?
            .ok_or_else(|| ctrd::image_not_found(&image.image))?;
        let chain_id = group.meta.chain_id.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("image {:?} has no layers to mount", image.image))
        })?;
        let host_path = image_volume::prepare(
            session,
            snapshotter,
            &crid.config.runtime_dir,
            id,
            n,
            &chain_id,
            &m.image_sub_path,
        )
        .await?;
        m.host_path = host_path.display().to_string();
        m.readonly = true;
        m.recursive_read_only = false;
        m.propagation = cri::MountPropagation::PropagationPrivate as i32;
        volumes.insert(
            n,
            ImageVolumeRecord {
                image: image.image,
                image_id: group.meta.id.clone(),
                sub_path: m.image_sub_path.clone(),
            },
        );
    }
    Ok((config, volumes))
}

/// Removes one container (killing it if it runs): its task, containerd
/// objects, stdio in the helper, files and record.
pub async fn remove_record(crid: &Crid, rec: &ContainerRecord) -> Result<()> {
    super::container_lifecycle::before_remove(crid, rec).await?;
    let lock = crid.containers.op_lock(&rec.id);
    let _held = lock.lock().await;
    let s = Session::plain(&crid.containerd);
    // A task that never got Running recorded (crid died mid-start) goes too.
    crate::container::task::kill(&s, &rec.id, libc::SIGKILL as u32, true).await?;
    crate::container::task::delete(&s, &rec.id).await?;
    // Before the snapshot under it goes, and before its dir is removed.
    crate::userns::rootfs::unmount(&crid.config.runtime_dir, &rec.id)?;
    ctrd::remove_all(&s, &rec.id, &rec.snapshotter, &rec.snapshot_key).await?;
    image_volume::cleanup(&s, &rec.snapshotter, &crid.config.runtime_dir, &rec.id).await?;
    crate::userns::rootfs::remove_container_dir(&crid.config.runtime_dir, &rec.id)?;
    let last = crid.containers.get(&rec.id).ok().flatten();
    crid.containers.delete(&rec.id)?;
    super::events::container(crid, rec, ContainerEventType::ContainerDeletedEvent).await;
    crate::nri::notify_container(
        crid,
        crid_proto::nri::Event::RemoveContainer,
        last.as_ref().unwrap_or(rec),
    )
    .await;
    Ok(())
}

/// `RemoveContainer`: an unknown id succeeds.
pub async fn remove(
    crid: &Crid,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse> {
    if let Some(rec) = crid.containers.get(&req.container_id)? {
        tracing::Span::current().record("container", rec.id.as_str());
        tracing::Span::current().record("pod", rec.sandbox_id.as_str());
        remove_record(crid, &rec).await?;
    }
    Ok(cri::RemoveContainerResponse {})
}

/// Removes every container of a pod sandbox (RemovePodSandbox).
pub async fn remove_of_sandbox(crid: &Crid, sandbox_id: &str) -> Result<()> {
    for rec in crid.containers.of_sandbox(sandbox_id) {
        remove_record(crid, &rec).await?;
    }
    Ok(())
}

fn metadata(r: &ContainerRecord) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: r.name.clone(),
        attempt: r.attempt,
    }
}

fn image_spec(r: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: r.image.clone(),
        ..Default::default()
    }
}

/// `ContainerStatus`.
pub async fn status(
    crid: &Crid,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse> {
    let r = crid
        .containers
        .get(&req.container_id)?
        .ok_or_else(|| Error::NotFound(format!("container {} not found", req.container_id)))?;
    tracing::Span::current().record("container", r.id.as_str());
    let mut info = HashMap::new();
    if req.verbose {
        // The keys of containerd's CRI plugin (crictl inspect, and tools that
        // read `info.pid` or `info.runtimeSpec.linux.namespaces`), plus crid's.
        let (runtime_type, runtime_options) = match sandbox_of(crid, &r.sandbox_id).await {
            Ok(sb) => (
                crate::runtime_handler::pod_runtime_type(&sb),
                crate::runtime_handler::pod_runtime_options(&crid.config, &sb),
            ),
            Err(_) => (ctrd::RUNTIME, None),
        };
        let v = serde_json::json!({
            "sandboxID": r.sandbox_id,
            "pid": r.pid.unwrap_or(0),
            "removing": false,
            "snapshotter": r.snapshotter,
            "snapshotKey": r.snapshot_key,
            "runtimeType": runtime_type,
            "runtimeOptions": runtime_options,
            "config": r.config,
            "runtimeSpec": r.spec,
            "imageID": r.image_id,
            "oomKilled": r.oom_killed,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(cri::ContainerStatusResponse {
        status: Some(status_of(&r)),
        info,
    })
}

/// The CRI status of a container record (ContainerStatus, container events).
pub fn status_of(r: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(metadata(r)),
        state: r.state.cri() as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        mounts: r
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: m.propagation,
                image: m.image.as_ref().map(|v| cri::ImageSpec {
                    image: v.image.clone(),
                    image_ref: v.image_id.clone(),
                    ..Default::default()
                }),
                image_sub_path: m
                    .image
                    .as_ref()
                    .map(|v| v.sub_path.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: super::container_update::status_resources(&r.spec),
        user: status_user(&r.spec),
        image_id: r.image_id.clone(),
        // What StopContainer sends first (SIGTERM unless configured).
        stop_signal: crate::container::exit::effective_stop_signal(r).map_or(
            cri::Signal::RuntimeDefault,
            crate::container::exit::cri_signal,
        ) as i32,
    }
}

/// `ContainerStatus.user`: the identity the container's first process was
/// given (uid, gid and every supplementary group, as the spec's
/// `process.user` says); `None` for a spec without one.
fn status_user(spec: &serde_json::Value) -> Option<cri::ContainerUser> {
    let user = spec.get("process")?.get("user")?;
    let id = |k: &str| user.get(k).and_then(serde_json::Value::as_i64);
    let supplemental_groups = user
        .get("additionalGids")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default();
    Some(cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: id("uid")?,
            gid: id("gid")?,
            supplemental_groups,
        }),
    })
}

/// `ListContainers` with the id-prefix, state, pod sandbox and label filters.
pub async fn list(
    crid: &Crid,
    req: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse> {
    let f = req.filter.unwrap_or_default();
    let mut containers: Vec<cri::Container> = crid
        .containers
        .all()
        .into_iter()
        .filter(|r| matches(&f, r))
        .map(|r| cri::Container {
            id: r.id.clone(),
            pod_sandbox_id: r.sandbox_id.clone(),
            metadata: Some(metadata(&r)),
            image: Some(image_spec(&r)),
            image_ref: r.image_ref.clone(),
            image_id: r.image_id.clone(),
            state: r.state.cri() as i32,
            created_at: r.created_at,
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
        })
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(cri::ListContainersResponse { containers })
}

/// Whether a record passes a ListContainers filter.
pub fn matches(f: &cri::ContainerFilter, r: &ContainerRecord) -> bool {
    (f.id.is_empty() || r.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == r.state.cri() as i32)
        && f.label_selector
            .iter()
            .all(|(k, v)| r.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_user_reports_the_specs_process_identity() {
        let spec = serde_json::json!({
            "process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 1234, 50000]}}
        });
        assert_eq!(
            status_user(&spec),
            Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: 1000,
                    gid: 1000,
                    supplemental_groups: vec![1000, 1234, 50000],
                }),
            })
        );
        let no_groups = serde_json::json!({"process": {"user": {"uid": 0, "gid": 0}}});
        assert_eq!(
            status_user(&no_groups)
                .and_then(|u| u.linux)
                .map(|l| l.supplemental_groups),
            Some(vec![])
        );
        assert_eq!(status_user(&serde_json::json!({})), None);
    }
}
