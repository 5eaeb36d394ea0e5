//! NRI, the node resource interface: plugins that see pods and containers
//! and adjust them, as containerd ≥ 1.7 and CRI-O offer.
//!
//! crid is the runtime side of NRI's protocol ([`conn`], [`frame`]):
//! external plugins connect to `[nri] socket_path`; pre-installed plugins
//! (`NN-name` executables in `plugin_path`) are started with a connected
//! socket (see [`launch`]). A plugin registers (RegisterPlugin), crid
//! configures it (Configure: the events it wants) and synchronizes it with
//! every existing pod and container (Synchronize), then calls it for each
//! pod and container event, in plugin index order.
//!
//! Guarantees:
//! - A plugin that fails or hangs never blocks a CRI call longer than
//!   `plugin_request_timeout_ms`: a timeout or a broken connection
//!   disconnects the plugin (and kills it if crid started it) and the event
//!   goes on without it, as containerd does. An error the plugin *returns*
//!   fails RunPodSandbox or CreateContainer (the CRI call undoes its work).
//! - No plugin misses a container: a new plugin's Synchronize holds the
//!   `sync` lock exclusively, and RunPodSandbox and CreateContainer hold it
//!   shared from their NRI event until their record is visible, so every
//!   pod and container is either in the Synchronize snapshot or reaches
//!   the plugin as an event.
//! - Events of all plugins are serialised (one at a time), so each plugin
//!   sees each object's events in order.

pub mod adjust;
pub mod conn;
pub mod convert;
pub mod frame;
mod launch;

use crate::cri::Crid;
use crate::error::{Error, Result};
use crate::sandbox::record::SandboxRecord;
use conn::{CallError, Conn, Handler};
use crid_common::config::NriConfig;
use crid_proto::nri;
use prost::Message as _;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// NRI's plugin service name.
const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// NRI's runtime service name.
const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// Every event a plugin can subscribe to (bit `e - 1` for event `e`).
const ALL_EVENTS: u32 = (1 << (nri::Event::PostUpdatePodSandbox as u32)) - 1;

/// A registered plugin.
struct Plugin {
    /// `NN-name`.
    name: String,
    /// The event mask from Configure.
    events: u32,
    conn: Arc<Conn>,
    /// The process, for plugins crid started.
    child: std::sync::Mutex<Option<std::process::Child>>,
}

/// Whether event mask `mask` subscribes to `e` (bit `e - 1`).
fn wants(mask: u32, e: nri::Event) -> bool {
    let e = e as u32;
    e > 0 && e <= 32 && mask & (1 << (e - 1)) != 0
}

impl Plugin {
    fn wants(&self, e: nri::Event) -> bool {
        wants(self.events, e)
    }

    /// Disconnects the plugin and ends its process if crid started it.
    fn close(&self) {
        self.conn.close();
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            // Reaped off the async threads.
            std::thread::spawn(move || c.wait());
        }
    }
}

/// The result of CreateContainer across plugins.
#[derive(Default)]
pub struct CreateResult {
    /// Whether a plugin adjusted the spec.
    pub adjusted: bool,
    /// Updates of other containers.
    pub update: Vec<nri::ContainerUpdate>,
    /// Containers to evict.
    pub evict: Vec<nri::ContainerEviction>,
}

/// crid's NRI runtime side.
pub struct Nri {
    cfg: NriConfig,
    /// Registered plugins in index order; held for the whole of an event.
    plugins: tokio::sync::Mutex<Vec<Arc<Plugin>>>,
    /// Exclusive for a new plugin's Synchronize, shared while a new pod or
    /// container is between its NRI event and being visible.
    sync: tokio::sync::RwLock<()>,
    crid: OnceLock<Weak<Crid>>,
}

/// A shared hold on [`Nri`]'s sync lock (see the module doc).
pub type SyncBlock<'a> = Option<tokio::sync::RwLockReadGuard<'a, ()>>;

impl Nri {
    /// NRI with `cfg`; nothing runs until [`start`].
    pub fn new(cfg: &NriConfig) -> Arc<Nri> {
        Arc::new(Nri {
            cfg: cfg.clone(),
            plugins: tokio::sync::Mutex::new(Vec::new()),
            sync: tokio::sync::RwLock::new(()),
            crid: OnceLock::new(),
        })
    }

    /// Whether NRI is enabled.
    pub fn enabled(&self) -> bool {
        self.cfg.enable
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.plugin_request_timeout_ms)
    }

    /// Keeps new plugins' Synchronize out until the guard drops.
    pub async fn block_sync(&self) -> SyncBlock<'_> {
        if self.enabled() {
            Some(self.sync.read().await)
        } else {
            None
        }
    }

    /// Calls `method` on every plugin subscribed to `event`, in order. A
    /// plugin that times out or whose connection breaks is disconnected and
    /// skipped; an error a plugin returns stops the event with that error.
    async fn dispatch<Req: prost::Message + Clone, Resp: prost::Message + Default>(
        &self,
        event: nri::Event,
        method: &str,
        req: &Req,
    ) -> Result<Vec<Resp>> {
        let mut out = Vec::new();
        self.dispatch_with(
            event,
            method,
            &mut out,
            |_| req.clone(),
            |out, r| {
                out.push(r);
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }

    /// [`Nri::dispatch`] where each plugin's request is made from `state`
    /// and each answer folded into it (CreateContainer: a plugin sees the
    /// adjustments of the plugins before it).
    async fn dispatch_with<S, Req, Resp>(
        &self,
        event: nri::Event,
        method: &str,
        state: &mut S,
        make_req: impl Fn(&S) -> Req,
        mut on_resp: impl FnMut(&mut S, Resp) -> Result<()>,
    ) -> Result<()>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        if !self.enabled() {
            return Ok(());
        }
        let mut plugins = self.plugins.lock().await;
        let mut failed = None;
        for p in plugins.iter() {
            if !p.wants(event) || p.conn.is_closed() {
                continue;
            }
            let req = make_req(state);
            match p
                .conn
                .call::<Req, Resp>(PLUGIN_SERVICE, method, &req, self.timeout())
                .await
            {
                Ok(r) => {
                    if let Err(e) = on_resp(state, r) {
                        failed = Some(e);
                        break;
                    }
                }
                Err(e) if e.is_fatal() => {
                    tracing::error!(plugin = %p.name, error = %e, "NRI: disconnecting plugin that failed {method}");
                    p.close();
                }
                Err(CallError::Status { code, .. })
                    if code == conn::CODE_UNIMPLEMENTED && state_change_event(event) =>
                {
                    // An older plugin: the event as a StateChange.
                    let _ = self.state_change(p, event, &req).await;
                }
                Err(e) => {
                    failed = Some(Error::Internal(format!(
                        "NRI plugin {} failed {method}: {e}",
                        p.name
                    )));
                    break;
                }
            }
        }
        plugins.retain(|p| !p.conn.is_closed());
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn state_change<Req: prost::Message>(
        &self,
        p: &Plugin,
        event: nri::Event,
        req: &Req,
    ) -> Result<()> {
        // Every fallback event's request is `pod = 1, container = 2`.
        let pc = nri::PodContainerRequest::decode(req.encode_to_vec().as_slice())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let ev = nri::StateChangeEvent {
            event: event as i32,
            pod: pc.pod,
            container: pc.container,
        };
        p.conn
            .call::<_, nri::Empty>(PLUGIN_SERVICE, "StateChange", &ev, self.timeout())
            .await
            .map(|_| ())
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// A notification whose failure is only logged.
    async fn notify(
        &self,
        event: nri::Event,
        method: &str,
        pod: nri::PodSandbox,
        ctr: Option<nri::Container>,
    ) {
        let req = nri::PodContainerRequest {
            pod: Some(pod),
            container: ctr,
        };
        if let Err(e) = self.dispatch::<_, nri::Empty>(event, method, &req).await {
            tracing::warn!(error = %e, "NRI {method}");
        }
    }

    /// RunPodSandbox: a plugin's error fails the pod's creation.
    pub async fn run_pod_sandbox(&self, pod: &SandboxRecord) -> Result<()> {
        let req = nri::RunPodSandboxRequest {
            pod: Some(convert::pod(pod)),
        };
        self.dispatch::<_, nri::Empty>(nri::Event::RunPodSandbox, "RunPodSandbox", &req)
            .await
            .map(|_| ())
    }

    /// StopPodSandbox (after the pod's containers stopped).
    pub async fn stop_pod_sandbox(&self, pod: &SandboxRecord) {
        self.notify(
            nri::Event::StopPodSandbox,
            "StopPodSandbox",
            convert::pod(pod),
            None,
        )
        .await;
    }

    /// RemovePodSandbox.
    pub async fn remove_pod_sandbox(&self, pod: &SandboxRecord) {
        self.notify(
            nri::Event::RemovePodSandbox,
            "RemovePodSandbox",
            convert::pod(pod),
            None,
        )
        .await;
    }

    /// CreateContainer: each plugin's adjustment applied to `spec` (the
    /// next plugin sees the adjusted container); the updates and evictions
    /// they ask for. A plugin's error or a bad adjustment fails the creation.
    pub async fn create_container(
        &self,
        pod: &SandboxRecord,
        base: &convert::ContainerBase<'_>,
        spec: &mut serde_json::Value,
        own_oom_score_adj: Option<i32>,
    ) -> Result<CreateResult> {
        struct State<'v> {
            req: nri::PodContainerRequest,
            spec: &'v mut serde_json::Value,
            out: CreateResult,
        }
        let mut st = State {
            req: nri::PodContainerRequest {
                pod: Some(convert::pod(pod)),
                container: Some(convert::container(base, spec)),
            },
            spec,
            out: CreateResult::default(),
        };
        self.dispatch_with(
            nri::Event::CreateContainer,
            "CreateContainer",
            &mut st,
            |st| st.req.clone(),
            |st, r: nri::CreateContainerResponse| {
                if let Some(adj) = r.adjust {
                    adjust::apply(st.spec, &adj, own_oom_score_adj)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                    st.req.container = Some(convert::container(base, st.spec));
                    st.out.adjusted = true;
                }
                st.out.update.extend(r.update);
                st.out.evict.extend(r.evict);
                Ok(())
            },
        )
        .await?;
        Ok(st.out)
    }

    /// PostCreateContainer, StartContainer, PostStartContainer,
    /// PostUpdateContainer or RemoveContainer: notifications.
    pub async fn container_event(
        &self,
        event: nri::Event,
        pod: &SandboxRecord,
        ctr: nri::Container,
    ) {
        let method = match event {
            nri::Event::PostCreateContainer => "PostCreateContainer",
            nri::Event::StartContainer => "StartContainer",
            nri::Event::PostStartContainer => "PostStartContainer",
            nri::Event::PostUpdateContainer => "PostUpdateContainer",
            nri::Event::RemoveContainer => "RemoveContainer",
            _ => return,
        };
        self.notify(event, method, convert::pod(pod), Some(ctr))
            .await;
    }

    /// StopContainer: the updates plugins ask for (errors are logged).
    pub async fn stop_container(
        &self,
        pod: &SandboxRecord,
        ctr: nri::Container,
    ) -> Vec<nri::ContainerUpdate> {
        let req = nri::PodContainerRequest {
            pod: Some(convert::pod(pod)),
            container: Some(ctr),
        };
        match self
            .dispatch::<_, nri::StopContainerResponse>(
                nri::Event::StopContainer,
                "StopContainer",
                &req,
            )
            .await
        {
            Ok(rs) => rs.into_iter().flat_map(|r| r.update).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "NRI StopContainer");
                Vec::new()
            }
        }
    }

    /// UpdateContainer (UpdateContainerResources): plugins may change the
    /// requested resources (an update of the container itself) and ask for
    /// other updates and evictions.
    pub async fn update_container(
        &self,
        pod: &SandboxRecord,
        ctr: nri::Container,
        resources: nri::LinuxResources,
    ) -> Result<(Vec<nri::ContainerUpdate>, Vec<nri::ContainerEviction>)> {
        let req = nri::UpdateContainerRequest {
            pod: Some(convert::pod(pod)),
            container: Some(ctr),
            linux_resources: Some(resources),
        };
        let rs: Vec<nri::UpdateContainerResponse> = self
            .dispatch(nri::Event::UpdateContainer, "UpdateContainer", &req)
            .await?;
        let mut update = Vec::new();
        let mut evict = Vec::new();
        for r in rs {
            update.extend(r.update);
            evict.extend(r.evict);
        }
        Ok((update, evict))
    }
}

fn state_change_event(e: nri::Event) -> bool {
    !matches!(
        e,
        nri::Event::CreateContainer | nri::Event::UpdateContainer | nri::Event::StopContainer
    )
}

/// Starts NRI for `crid` when enabled: the socket for external plugins and
/// the pre-installed plugins.
pub async fn start(crid: &Arc<Crid>) -> std::io::Result<()> {
    let nri = Arc::clone(&crid.nri);
    if !nri.enabled() {
        return Ok(());
    }
    let _ = nri.crid.set(Arc::downgrade(crid));
    if !nri.cfg.socket_path.as_os_str().is_empty() {
        let path = nri.cfg.socket_path.clone();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        tracing::info!(socket = %path.display(), "NRI: accepting plugins");
        let me = Arc::clone(&nri);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let me = Arc::clone(&me);
                        tokio::spawn(async move { me.connect(stream, None).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "NRI: accepting a plugin connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    for (idx, base, path) in preinstalled(&nri.cfg.plugin_path) {
        let me = Arc::clone(&nri);
        let (local, peer) = std::os::unix::net::UnixStream::pair()?;
        let child = match launch::spawn(&path, &idx, &base, peer.into()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(plugin = %path.display(), error = %e, "NRI: starting plugin");
                continue;
            }
        };
        local.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(local)?;
        let cfg = plugin_config(&nri.cfg.plugin_config_path, &idx, &base);
        // Pre-installed plugins are registered before crid serves CRI calls,
        // as containerd starts them before its CRI plugin.
        me.connect(
            stream,
            Some(Launched {
                idx,
                base,
                child,
                cfg,
            }),
        )
        .await;
    }
    Ok(())
}

/// `NN-name` executables in `dir`, in name order.
fn preinstalled(dir: &std::path::Path) -> Vec<(String, String, std::path::PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (idx, base) = split_plugin_name(&name)?;
            let meta = e.metadata().ok()?;
            let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            (meta.is_file() && exec).then(|| (idx.to_string(), base.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

/// `NN-name` → (`NN`, `name`): two digits, a dash, a non-empty name.
pub fn split_plugin_name(name: &str) -> Option<(&str, &str)> {
    let (idx, base) = name.split_once('-')?;
    (idx.len() == 2 && idx.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then_some((idx, base))
}

/// A pre-installed plugin's config: `NN-name.conf`, else `name.conf`.
fn plugin_config(dir: &std::path::Path, idx: &str, base: &str) -> String {
    [format!("{idx}-{base}.conf"), format!("{base}.conf")]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_default()
}

struct Launched {
    idx: String,
    base: String,
    child: std::process::Child,
    cfg: String,
}

impl Nri {
    fn crid(&self) -> Option<Arc<Crid>> {
        self.crid.get().and_then(Weak::upgrade)
    }

    /// Registers, configures and synchronizes one plugin connection.
    async fn connect(self: Arc<Self>, stream: tokio::net::UnixStream, launched: Option<Launched>) {
        let (reg_tx, reg_rx) =
            tokio::sync::oneshot::channel::<std::result::Result<(String, String), String>>();
        let reg_tx = Arc::new(std::sync::Mutex::new(Some(reg_tx)));
        let weak = Arc::downgrade(&self);
        let handler: Handler = Arc::new(move |method: String, body: Vec<u8>| {
            let reg_tx = Arc::clone(&reg_tx);
            let weak = weak.clone();
            Box::pin(async move {
                match method
                    .strip_prefix(RUNTIME_SERVICE)
                    .and_then(|m| m.strip_prefix('/'))
                {
                    Some("RegisterPlugin") => {
                        let req = nri::RegisterPluginRequest::decode(body.as_slice())
                            .map_err(|e| (3, e.to_string()))?;
                        let checked = check_registration(&req);
                        let tx = reg_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
                        if let Some(tx) = tx {
                            let _ = tx.send(checked.clone());
                        }
                        checked.map_err(|e| (3, e))?;
                        Ok(nri::Empty {}.encode_to_vec())
                    }
                    Some("UpdateContainers") => {
                        let req = nri::UpdateContainersRequest::decode(body.as_slice())
                            .map_err(|e| (3, e.to_string()))?;
                        let Some(crid) = weak.upgrade().and_then(|n| n.crid()) else {
                            return Err((14, "crid is shutting down".to_string()));
                        };
                        let failed = apply_updates(&crid, req.update, req.evict).await;
                        Ok(nri::UpdateContainersResponse { failed }.encode_to_vec())
                    }
                    _ => Err((conn::CODE_UNIMPLEMENTED, format!("unknown method {method}"))),
                }
            })
        });
        let conn = Conn::start(stream, handler);
        let (mut child, cfg, launched_name) = match launched {
            Some(l) => (Some(l.child), l.cfg, Some((l.idx, l.base))),
            None => (None, String::new(), None),
        };
        let fail = |child: &mut Option<std::process::Child>, conn: &Conn, why: String| {
            tracing::warn!("NRI: plugin not registered: {why}");
            conn.close();
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                std::thread::spawn(move || c.wait());
            }
        };
        let reg_timeout = Duration::from_millis(self.cfg.plugin_registration_timeout_ms);
        let (idx, base) = match tokio::time::timeout(reg_timeout, reg_rx).await {
            Ok(Ok(Ok((idx, base)))) => match &launched_name {
                // A pre-installed plugin keeps the name crid started it as.
                Some((i, b)) => (i.clone(), b.clone()),
                None => (idx, base),
            },
            Ok(Ok(Err(why))) => return fail(&mut child, &conn, why),
            Ok(Err(_)) => return fail(&mut child, &conn, "connection closed".into()),
            Err(_) => {
                return fail(
                    &mut child,
                    &conn,
                    format!("no registration within {reg_timeout:?}"),
                )
            }
        };
        let name = format!("{idx}-{base}");
        let configure = nri::ConfigureRequest {
            config: cfg,
            runtime_name: "crid".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            registration_timeout: self.cfg.plugin_registration_timeout_ms as i64,
            request_timeout: self.cfg.plugin_request_timeout_ms as i64,
            nri_version: String::new(),
        };
        let events = match conn
            .call::<_, nri::ConfigureResponse>(
                PLUGIN_SERVICE,
                "Configure",
                &configure,
                self.timeout(),
            )
            .await
        {
            Ok(r) if r.events == 0 => ALL_EVENTS,
            Ok(r) if (r.events as u32) & !ALL_EVENTS != 0 => {
                return fail(
                    &mut child,
                    &conn,
                    format!("{name}: invalid event mask {:#x}", r.events),
                );
            }
            Ok(r) => r.events as u32,
            Err(e) => return fail(&mut child, &conn, format!("{name}: Configure: {e}")),
        };
        let plugin = Arc::new(Plugin {
            name: name.clone(),
            events,
            conn: Arc::clone(&conn),
            child: std::sync::Mutex::new(child),
        });
        // Synchronize with no pod or container in flight (module doc).
        let sync_guard = self.sync.write().await;
        let (pods, containers) = match self.crid() {
            Some(crid) => snapshot(&crid).await,
            None => (Vec::new(), Vec::new()),
        };
        let (npods, nctrs) = (pods.len(), containers.len());
        let req = nri::SynchronizeRequest {
            pods,
            containers,
            more: false,
        };
        let updates = match conn
            .call::<_, nri::SynchronizeResponse>(
                PLUGIN_SERVICE,
                "Synchronize",
                &req,
                self.timeout(),
            )
            .await
        {
            Ok(r) => r.update,
            Err(e) => {
                plugin.close();
                tracing::warn!(plugin = %name, error = %e, "NRI: Synchronize failed; plugin disconnected");
                return;
            }
        };
        {
            let mut plugins = self.plugins.lock().await;
            plugins.retain(|p| !p.conn.is_closed());
            plugins.push(Arc::clone(&plugin));
            plugins.sort_by(|a, b| a.name.cmp(&b.name));
        }
        drop(sync_guard);
        tracing::info!(plugin = %name, events = format!("{events:#x}"), pods = npods, containers = nctrs, "NRI: plugin registered and synchronized");
        if !updates.is_empty() {
            if let Some(crid) = self.crid() {
                let failed = apply_updates(&crid, updates, Vec::new()).await;
                if !failed.is_empty() {
                    tracing::warn!(plugin = %name, failed = failed.len(), "NRI: Synchronize updates failed");
                }
            }
        }
        // Forget the plugin once its connection ends.
        let me = Arc::clone(&self);
        tokio::spawn(async move {
            plugin.conn.wait_closed().await;
            tracing::info!(plugin = %plugin.name, "NRI: plugin disconnected");
            plugin.close();
            me.plugins.lock().await.retain(|p| !Arc::ptr_eq(p, &plugin));
        });
    }
}

fn check_registration(
    req: &nri::RegisterPluginRequest,
) -> std::result::Result<(String, String), String> {
    if req.plugin_name.is_empty() || req.plugin_name.contains('/') {
        return Err(format!("invalid plugin name {:?}", req.plugin_name));
    }
    if req.plugin_idx.len() != 2 || !req.plugin_idx.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid plugin index {:?}", req.plugin_idx));
    }
    Ok((req.plugin_idx.clone(), req.plugin_name.clone()))
}

/// Every visible pod and its containers, as NRI sees them.
async fn snapshot(crid: &Crid) -> (Vec<nri::PodSandbox>, Vec<nri::Container>) {
    let sb = Arc::clone(&crid.sandboxes);
    let pods = tokio::task::spawn_blocking(move || sb.all())
        .await
        .unwrap_or_default();
    let ids: std::collections::HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    let containers = crid
        .containers
        .all()
        .iter()
        .filter(|c| ids.contains(c.sandbox_id.as_str()))
        .map(convert::container_of_record)
        .collect();
    (pods.iter().map(convert::pod).collect(), containers)
}

/// Sends container event `event` for `rec` (its pod looked up); a no-op
/// when NRI is off or the pod is gone.
pub async fn notify_container(
    crid: &Crid,
    event: nri::Event,
    rec: &crate::container::record::ContainerRecord,
) {
    if !crid.nri.enabled() {
        return;
    }
    let Ok(sb) = crate::cri::container::sandbox_of(crid, &rec.sandbox_id).await else {
        return;
    };
    crid.nri
        .container_event(event, &sb, convert::container_of_record(rec))
        .await;
}

/// StopContainer for `rec` (it has just stopped), then the updates plugins
/// ask for.
pub async fn container_stopped(crid: &Crid, rec: &crate::container::record::ContainerRecord) {
    if !crid.nri.enabled() {
        return;
    }
    let Ok(sb) = crate::cri::container::sandbox_of(crid, &rec.sandbox_id).await else {
        return;
    };
    let updates = crid
        .nri
        .stop_container(&sb, convert::container_of_record(rec))
        .await;
    if !updates.is_empty() {
        apply_updates(crid, updates, Vec::new()).await;
    }
}

/// Applies plugin-requested updates and evictions; returns the updates
/// that failed (and were not marked ignore_failure).
/// Boxed: an eviction stops a container, whose StopContainer event may
/// bring more updates.
pub fn apply_updates(
    crid: &Crid,
    updates: Vec<nri::ContainerUpdate>,
    evictions: Vec<nri::ContainerEviction>,
) -> futures_util::future::BoxFuture<'_, Vec<nri::ContainerUpdate>> {
    Box::pin(apply_updates_inner(crid, updates, evictions))
}

async fn apply_updates_inner(
    crid: &Crid,
    updates: Vec<nri::ContainerUpdate>,
    evictions: Vec<nri::ContainerEviction>,
) -> Vec<nri::ContainerUpdate> {
    let mut failed = Vec::new();
    for u in updates {
        let Some(res) = u.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
            continue;
        };
        if let Err(e) =
            crate::cri::container_update::apply_nri_resources(crid, &u.container_id, res).await
        {
            tracing::warn!(container = %u.container_id, error = %e, "NRI: container update failed");
            if !u.ignore_failure {
                failed.push(u);
            }
        }
    }
    for ev in evictions {
        tracing::info!(container = %ev.container_id, reason = %ev.reason, "NRI: evicting container");
        if let Err(e) = crate::cri::container_lifecycle::evict(crid, &ev.container_id).await {
            tracing::warn!(container = %ev.container_id, error = %e, "NRI: eviction failed");
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_two_digits_dash_name() {
        assert_eq!(split_plugin_name("10-logger"), Some(("10", "logger")));
        assert_eq!(split_plugin_name("10-a-b"), Some(("10", "a-b")));
        assert_eq!(split_plugin_name("1-x"), None);
        assert_eq!(split_plugin_name("ab-x"), None);
        assert_eq!(split_plugin_name("10-"), None);
    }

    #[test]
    fn event_masks_use_bit_event_minus_one() {
        let only_create = 1 << (nri::Event::CreateContainer as u32 - 1);
        assert_eq!(only_create, 0x8);
        assert!(wants(only_create, nri::Event::CreateContainer));
        assert!(!wants(only_create, nri::Event::RunPodSandbox));
        assert!(wants(ALL_EVENTS, nri::Event::RunPodSandbox));
        assert!(wants(ALL_EVENTS, nri::Event::PostUpdatePodSandbox));
        assert!(!wants(ALL_EVENTS, nri::Event::ValidateContainerAdjustment));
        assert!(!wants(ALL_EVENTS, nri::Event::Unknown));
    }

    #[test]
    fn registration_checks_name_and_index() {
        let r = |n: &str, i: &str| nri::RegisterPluginRequest {
            plugin_name: n.into(),
            plugin_idx: i.into(),
            nri_version: String::new(),
        };
        assert_eq!(
            check_registration(&r("x", "05")),
            Ok(("05".into(), "x".into()))
        );
        assert!(check_registration(&r("", "05")).is_err());
        assert!(check_registration(&r("x", "5")).is_err());
        assert!(check_registration(&r("a/b", "05")).is_err());
    }
}
