//! `crid debug ...`: what an operator needs to see of the node's pods
//! without a CRI client: each pod's helper (pid, alive, in the pod cgroup, its
//! memory cost as PSS), cgroup, netns pin and log dir, one pod's containers,
//! and the effective config.
//!
//! It reads crid's state dir and /proc directly instead of asking crid over
//! the CRI socket: the moment an operator needs this is often the moment crid
//! is stopped, wedged or crash-looping, and CRI has no call for helper pids,
//! cgroup membership or PSS anyway. Records are replaced by rename
//! ([`crate::store`]), so reading them while crid runs never sees a torn one.
//! The only thing it asks is the helper itself (a Ping on its control socket),
//! and only for `debug pod <id>`.

use crate::cgroups::{self, Hierarchy};
use crate::container::record::{ContainerRecord, RECORD_VERSION as CONTAINER_RECORD_VERSION};
use crate::helper_client;
use crate::sandbox::record::{SandboxRecord, SandboxState, RECORD_VERSION};
use crate::store::Store;
use crid_common::config::Config;
use crid_common::protocol::{Request, Response};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `crid debug` shows.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DebugCommand {
    /// Every pod: helper pid and cgroup membership, cgroup, netns, helper PSS, log dir.
    Pods {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One pod (id or unique id prefix): its helper's live state and its containers.
    Pod {
        /// Pod sandbox id or a unique prefix of one.
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The effective configuration (file, defaults and flags), as TOML.
    Config {
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// A debug command that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    /// The state could not be read.
    #[error("{0}")]
    State(#[from] crate::store::StoreError),
    /// No pod matched the id, or more than one did.
    #[error("{0}")]
    Pod(String),
    /// Serialising the answer failed.
    #[error("encoding the output: {0}")]
    Encode(String),
}

/// Runs one debug command and returns what it prints.
pub fn run(cmd: &DebugCommand, config: &Config) -> Result<String, DebugError> {
    match cmd {
        DebugCommand::Config { json } => {
            if *json {
                to_json(config)
            } else {
                toml::to_string_pretty(config).map_err(|e| DebugError::Encode(e.to_string()))
            }
        }
        DebugCommand::Pods { json } => {
            let mounts = hierarchies();
            let pods: Vec<PodView> = load_sandboxes(config)?
                .iter()
                .map(|r| PodView::of(r, &ProcFs, &mounts))
                .collect();
            if *json {
                to_json(&pods)
            } else {
                Ok(pods_table(&pods))
            }
        }
        DebugCommand::Pod { id, json } => {
            let sandboxes = load_sandboxes(config)?;
            let rec = find_pod(&sandboxes, id)?;
            let mounts = hierarchies();
            let mut containers: Vec<ContainerView> = load_containers(config)?
                .into_iter()
                .filter(|c| c.sandbox_id == rec.id)
                .map(|c| ContainerView::of(&c))
                .collect();
            containers.sort_by_key(|c| c.created_at);
            let detail = PodDetail {
                pod: PodView::of(rec, &ProcFs, &mounts),
                helper_socket: rec.socket(),
                helper_answer: ping_helper(rec),
                helper_threads: rec.helper_pid.and_then(|p| status_field(p, "Threads")),
                helper_rss_kib: rec
                    .helper_pid
                    .and_then(|p| status_field(p, "VmRSS"))
                    .and_then(|v| kib(&v)),
                ips: rec.ips.clone(),
                runtime_handler: rec.runtime_handler.clone(),
                containers,
            };
            if *json {
                to_json(&detail)
            } else {
                Ok(pod_text(&detail))
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, DebugError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| DebugError::Encode(e.to_string()))
}

/// The sandbox records, oldest first; none when the state dir does not exist
/// (crid never ran with this config). Unreadable records are skipped: the
/// crid that reads them at start logs them.
fn load_sandboxes(config: &Config) -> Result<Vec<SandboxRecord>, DebugError> {
    let dir = config.state_dir.join("sandboxes");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let (mut recs, _bad) = Store::<SandboxRecord>::open(&dir, RECORD_VERSION)?.load_all()?;
    recs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(recs)
}

fn load_containers(config: &Config) -> Result<Vec<ContainerRecord>, DebugError> {
    let dir = config.state_dir.join("containers");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(
        Store::<ContainerRecord>::open(&dir, CONTAINER_RECORD_VERSION)?
            .load_all()?
            .0,
    )
}

/// The pod whose id is `id` or, failing that, the one pod whose id starts with it.
fn find_pod<'a>(recs: &'a [SandboxRecord], id: &str) -> Result<&'a SandboxRecord, DebugError> {
    if id.is_empty() {
        return Err(DebugError::Pod("an empty pod id".into()));
    }
    if let Some(r) = recs.iter().find(|r| r.id == id) {
        return Ok(r);
    }
    let matches: Vec<&SandboxRecord> = recs.iter().filter(|r| r.id.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(DebugError::Pod(format!("no pod sandbox {id:?}"))),
        many => Err(DebugError::Pod(format!(
            "{id:?} is a prefix of {} pod sandboxes; give more of the id",
            many.len()
        ))),
    }
}

/// What the view reads of /proc and the cgroup files (faked in tests).
trait ProcSource {
    /// `/proc/<pid>/smaps_rollup`.
    fn smaps_rollup(&self, pid: u32) -> Option<String>;
    /// A cgroup dir's `cgroup.procs`.
    fn cgroup_procs(&self, dir: &Path) -> Option<String>;
    /// Whether the helper / reaper pid is still that process.
    fn alive(&self, pid: u32, reaper: bool) -> bool;
}

struct ProcFs;

impl ProcSource for ProcFs {
    fn smaps_rollup(&self, pid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()
    }
    fn cgroup_procs(&self, dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join("cgroup.procs")).ok()
    }
    fn alive(&self, pid: u32, reaper: bool) -> bool {
        if reaper {
            helper_client::reaper_alive(pid)
        } else {
            helper_client::helper_alive(pid)
        }
    }
}

/// One pod as `debug pods` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct PodView {
    id: String,
    name: String,
    namespace: String,
    uid: String,
    /// `ready`, `creating` or `not_ready`.
    state: &'static str,
    /// Why NotReady.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    helper_pid: Option<u32>,
    helper_alive: bool,
    /// Whether the helper pid is in its cgroup under the pod's in every
    /// hierarchy it was placed in: cgroupfs, the leaf crid made in each;
    /// systemd, its scope in the pod's slice in the name=systemd and
    /// cgroup2 hierarchies and in every v1 controller systemd realized the
    /// scope in.
    helper_in_pod_cgroup: bool,
    /// The pod's cgroup (the helper leaf's parent; the systemd driver: the
    /// pod's slice), relative to the cgroup mount.
    cgroup_path: Option<String>,
    /// The helper's cgroup dirs (leaves or scope), one per hierarchy.
    helper_cgroups: Vec<PathBuf>,
    /// The pinned network namespace (None: the host's).
    netns_path: Option<PathBuf>,
    /// The helper's proportional set size (kiB).
    helper_pss_kib: Option<u64>,
    /// The pod PID-namespace init's pid and PSS, when the pod has one.
    reaper_pid: Option<u32>,
    reaper_pss_kib: Option<u64>,
    /// What the pod costs beyond its containers: helper + reaper PSS (kiB).
    overhead_pss_kib: Option<u64>,
    log_directory: String,
}

impl PodView {
    fn of(r: &SandboxRecord, src: &dyn ProcSource, hs: &[Hierarchy]) -> PodView {
        let helper_pid = r.helper_pid;
        let helper_alive = helper_pid.is_some_and(|p| src.alive(p, false));
        let placed = match &r.systemd {
            Some(units) => systemd_placement(units, src, hs),
            None => cgroupfs_placement(r, src, hs),
        };
        let helper_in_pod_cgroup = match helper_pid {
            Some(pid) if helper_alive && !placed.dirs.is_empty() => placed
                .dirs
                .iter()
                .all(|(_, procs)| procs.as_deref().is_some_and(|p| procs_contain(p, pid))),
            _ => false,
        };
        let cgroup_path = placed.pod;
        let helper_cgroups = placed.dirs.into_iter().map(|(d, _)| d).collect();
        let pss = |pid: Option<u32>, reaper: bool| {
            pid.filter(|p| src.alive(*p, reaper))
                .and_then(|p| src.smaps_rollup(p))
                .and_then(|s| pss_kib(&s))
        };
        let helper_pss_kib = pss(helper_pid, false);
        let reaper_pss_kib = pss(r.reaper_pid, true);
        let overhead_pss_kib = helper_pss_kib.map(|h| h + reaper_pss_kib.unwrap_or(0));
        let (state, reason) = match &r.state {
            SandboxState::Ready => ("ready", None),
            SandboxState::Creating => ("creating", None),
            SandboxState::NotReady(why) => ("not_ready", Some(why.clone())),
        };
        PodView {
            id: r.id.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            uid: r.uid.clone(),
            state,
            reason,
            helper_pid,
            helper_alive,
            helper_in_pod_cgroup,
            cgroup_path,
            helper_cgroups,
            netns_path: r.own_namespaces().net.then(|| r.ns_dir().join("net")),
            helper_pss_kib,
            reaper_pid: r.reaper_pid,
            reaper_pss_kib,
            overhead_pss_kib,
            log_directory: r.log_directory.clone(),
        }
    }
}

/// Where a pod's helper should be: its cgroup dirs with their
/// `cgroup.procs` (None: missing or unreadable), and the pod's cgroup path.
struct HelperPlacement {
    dirs: Vec<(PathBuf, Option<String>)>,
    pod: Option<String>,
}

/// cgroupfs: the leaves crid made (recorded with the sandbox).
fn cgroupfs_placement(
    r: &SandboxRecord,
    src: &dyn ProcSource,
    hs: &[Hierarchy],
) -> HelperPlacement {
    let mounts: Vec<PathBuf> = hs.iter().map(|h| h.mount.clone()).collect();
    HelperPlacement {
        dirs: r
            .cgroups
            .leaves
            .iter()
            .map(|leaf| (leaf.clone(), src.cgroup_procs(leaf)))
            .collect(),
        pod: r
            .cgroups
            .leaves
            .first()
            .and_then(|leaf| leaf.parent())
            .map(|pod| relative_cgroup(pod, &mounts)),
    }
}

/// The systemd driver: the helper's scope in the pod's slice. systemd
/// makes a unit's dir in the name=systemd and cgroup2 hierarchies always
/// (the helper must be there), and in a v1 controller's only when a unit
/// of the slice asks for that controller (the scope asks for cpu, memory,
/// pids, blkio and devices; systemd 252 made no cpuacct, cpuset or freezer
/// dir for it on the hybrid test host): where the scope's dir exists the
/// helper must be in it; where it does not, systemd put no process of the
/// scope there and there is nothing to check.
fn systemd_placement(
    units: &crate::systemd_cgroups::PodUnits,
    src: &dyn ProcSource,
    hs: &[Hierarchy],
) -> HelperPlacement {
    let mut out = HelperPlacement {
        dirs: Vec::new(),
        pod: crate::systemd_cgroups::pod_cgroup_path(units).ok(),
    };
    // No scope yet (the helper never got ready): in no pod cgroup.
    let Ok(Some(scope)) = crate::systemd_cgroups::helper_cgroup_path(units) else {
        return out;
    };
    for h in hs {
        let dir = h.mount.join(scope.trim_start_matches('/'));
        let always = h.controllers.is_empty() || h.controllers.iter().any(|c| c == "name=systemd");
        let procs = src.cgroup_procs(&dir);
        // A missing dir systemd always makes stays listed, unread: not in.
        if procs.is_some() || always {
            out.dirs.push((dir, procs));
        }
    }
    out
}

/// One container of `debug pod`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ContainerView {
    id: String,
    name: String,
    attempt: u32,
    state: &'static str,
    pid: Option<u32>,
    image: String,
    log_path: Option<PathBuf>,
    /// Exit code and reason once exited.
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    created_at: i64,
}

impl ContainerView {
    fn of(c: &ContainerRecord) -> ContainerView {
        use crate::container::record::ContainerState as S;
        let state = match c.state {
            S::Created => "created",
            S::Running => "running",
            S::Exited => "exited",
        };
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            attempt: c.attempt,
            state,
            pid: c.pid.filter(|_| c.state == S::Running),
            image: c.image.clone(),
            log_path: c.log_path.clone(),
            exit_code: (c.state == S::Exited).then_some(c.exit_code),
            reason: c.reason.clone(),
            created_at: c.created_at,
        }
    }
}

/// `debug pod <id>`.
#[derive(Debug, Clone, Serialize)]
struct PodDetail {
    #[serde(flatten)]
    pod: PodView,
    helper_socket: PathBuf,
    /// The helper's answer to a Ping on its control socket.
    helper_answer: HelperAnswer,
    helper_threads: Option<String>,
    helper_rss_kib: Option<u64>,
    ips: Vec<String>,
    runtime_handler: String,
    containers: Vec<ContainerView>,
}

/// Whether the helper answers on its control socket, and as what.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
enum HelperAnswer {
    /// It answered the Ping.
    Answered {
        pid: u32,
        build: String,
        protocol_version: u32,
        protocol_revision: u32,
    },
    /// It did not.
    NoAnswer { error: String },
}

fn ping_helper(r: &SandboxRecord) -> HelperAnswer {
    let answer = (|| {
        let (mut s, hello) =
            helper_client::connect_with_hello(&r.socket(), Duration::from_secs(2))?;
        match helper_client::call(&mut s, &Request::Ping)? {
            Response::Pong { pid } => Ok(HelperAnswer::Answered {
                pid,
                build: hello.build,
                protocol_version: hello.version,
                protocol_revision: hello.revision,
            }),
            other => Err(format!("unexpected answer {other:?}")),
        }
    })();
    answer.unwrap_or_else(|error| HelperAnswer::NoAnswer { error })
}

/// The `Pss:` figure of a smaps_rollup text, in kiB.
fn pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(kib)
}

/// "  1234 kB" → 1234.
fn kib(v: &str) -> Option<u64> {
    v.split_whitespace().next()?.parse().ok()
}

/// One field of /proc/<pid>/status, value only.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Whether a cgroup.procs text lists `pid`.
fn procs_contain(procs: &str, pid: u32) -> bool {
    procs.lines().any(|l| l.trim().parse::<u32>() == Ok(pid))
}

/// The cgroup hierarchies of this host.
fn hierarchies() -> Vec<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroups::hierarchies(&mountinfo)
}

/// `dir` relative to the deepest cgroup mount holding it ("/a/b"); the
/// absolute path when none does.
fn relative_cgroup(dir: &Path, mounts: &[PathBuf]) -> String {
    mounts
        .iter()
        .filter(|m| dir.starts_with(m))
        .max_by_key(|m| m.components().count())
        .and_then(|m| dir.strip_prefix(m).ok())
        .map(|rel| format!("/{}", rel.display()))
        .unwrap_or_else(|| dir.display().to_string())
}

fn short(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

fn opt_path(v: &Option<PathBuf>) -> String {
    v.as_ref().map_or("-".into(), |p| p.display().to_string())
}

fn helper_summary(p: &PodView) -> String {
    match (p.helper_pid, p.helper_alive, p.helper_in_pod_cgroup) {
        (None, _, _) => "none".into(),
        (Some(pid), false, _) => format!("{pid} (dead)"),
        (Some(pid), true, true) => format!("{pid} (in pod cgroup)"),
        (Some(pid), true, false) => format!("{pid} (NOT in pod cgroup)"),
    }
}

fn pods_table(pods: &[PodView]) -> String {
    if pods.is_empty() {
        return "no pod sandboxes\n".into();
    }
    let header = [
        "POD ID", "NAME", "STATE", "HELPER", "PSS KiB", "CGROUP", "NETNS", "LOGS",
    ];
    let rows: Vec<[String; 8]> = pods
        .iter()
        .map(|p| {
            [
                short(&p.id).to_string(),
                format!("{}/{}", p.namespace, p.name),
                p.state.to_string(),
                helper_summary(p),
                opt(&p.overhead_pss_kib),
                opt(&p.cgroup_path),
                opt_path(&p.netns_path),
                p.log_directory.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

fn pod_text(d: &PodDetail) -> String {
    let p = &d.pod;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pod         {} ({}/{}, uid {})",
        p.id, p.namespace, p.name, p.uid
    );
    let _ = writeln!(
        o,
        "state       {}{}",
        p.state,
        p.reason
            .as_ref()
            .map_or(String::new(), |r| format!(": {r}"))
    );
    let _ = writeln!(o, "helper      {}", helper_summary(p));
    match &d.helper_answer {
        HelperAnswer::Answered {
            pid,
            build,
            protocol_version,
            protocol_revision,
        } => {
            let _ = writeln!(
                o,
                "  answers   pid {pid}, build {build}, protocol {protocol_version}.{protocol_revision}"
            );
        }
        HelperAnswer::NoAnswer { error } => {
            let _ = writeln!(o, "  answers   NO: {error}");
        }
    }
    let _ = writeln!(o, "  socket    {}", d.helper_socket.display());
    let _ = writeln!(
        o,
        "  memory    PSS {} KiB, RSS {} KiB, threads {}",
        opt(&p.helper_pss_kib),
        opt(&d.helper_rss_kib),
        opt(&d.helper_threads)
    );
    if let Some(pid) = p.reaper_pid {
        let _ = writeln!(o, "  pid-ns init {pid}, PSS {} KiB", opt(&p.reaper_pss_kib));
    }
    let _ = writeln!(o, "overhead    {} KiB PSS", opt(&p.overhead_pss_kib));
    let _ = writeln!(o, "cgroup      {}", opt(&p.cgroup_path));
    for leaf in &p.helper_cgroups {
        let _ = writeln!(o, "  leaf      {}", leaf.display());
    }
    let _ = writeln!(o, "netns       {}", opt_path(&p.netns_path));
    let _ = writeln!(o, "ips         {}", d.ips.join(", "));
    let handler = if d.runtime_handler.is_empty() {
        "(default)"
    } else {
        &d.runtime_handler
    };
    let _ = writeln!(o, "handler     {handler}");
    let _ = writeln!(o, "logs        {}", p.log_directory);
    let _ = writeln!(o, "containers  {}", d.containers.len());
    for c in &d.containers {
        let exit = c
            .exit_code
            .map_or(String::new(), |code| format!(" exit {code} {}", c.reason));
        let _ = writeln!(
            o,
            "  {} {} (attempt {}) {}{} pid {} image {} log {}",
            short(&c.id),
            c.name,
            c.attempt,
            c.state,
            exit,
            opt(&c.pid),
            c.image,
            opt_path(&c.log_path)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Placement;
    use std::collections::HashMap;

    struct FakeProc {
        alive: Vec<u32>,
        smaps: HashMap<u32, String>,
        procs: HashMap<PathBuf, String>,
    }

    impl ProcSource for FakeProc {
        fn smaps_rollup(&self, pid: u32) -> Option<String> {
            self.smaps.get(&pid).cloned()
        }
        fn cgroup_procs(&self, dir: &Path) -> Option<String> {
            self.procs.get(dir).cloned()
        }
        fn alive(&self, pid: u32, _reaper: bool) -> bool {
            self.alive.contains(&pid)
        }
    }

    fn record(id: &str) -> SandboxRecord {
        let json = serde_json::json!({
            "id": id, "name": "web", "namespace": "default", "uid": "u1", "attempt": 0,
            "state": "ready", "torn_down": false, "created_at": 1,
            "labels": {}, "annotations": {}, "runtime_handler": "runc", "hostname": "web",
            "log_directory": "/var/log/pods/default_web_u1",
            "namespace_modes": {"network": 0, "pid": 0, "ipc": 0},
            "cgroup_parent": "/kubepods/pod1",
            "cgroups": {"leaves": [], "created": []},
            "dir": format!("/run/crid/sandboxes/{id}"), "shm_mounted": true,
            "cni": null, "cni_result": null, "ips": ["10.88.0.2"],
            "helper_pid": 40, "reaper_pid": 41,
        });
        serde_json::from_value(json).unwrap()
    }

    const SMAPS: &str = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2000 kB\nPss:  1234 kB\nPss_Anon: 900 kB\n";

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        assert_eq!(pss_kib(SMAPS), Some(1234));
        assert_eq!(pss_kib("Rss: 3 kB\n"), None);
        assert_eq!(pss_kib("Pss: lots kB\n"), None);
    }

    #[test]
    fn helper_in_pod_cgroup_needs_every_leaf_to_list_it() {
        let mut r = record("abc");
        let v2 = PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1/crid-pod-helper");
        let mem = PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/crid-pod-helper");
        r.cgroups = Placement {
            leaves: vec![mem.clone(), v2.clone()],
            created: vec![],
        };
        let mounts = [
            hv1("/sys/fs/cgroup/memory", "memory"),
            hv2("/sys/fs/cgroup/unified"),
            hv2("/sys/fs/cgroup"),
        ];
        let mut src = FakeProc {
            alive: vec![40, 41],
            smaps: HashMap::from([(40, SMAPS.to_string()), (41, "Pss: 100 kB\n".into())]),
            procs: HashMap::from([(mem.clone(), "40\n".into()), (v2.clone(), "40\n".into())]),
        };
        let v = PodView::of(&r, &src, &mounts);
        assert!(v.helper_alive);
        assert!(v.helper_in_pod_cgroup);
        assert_eq!(v.cgroup_path.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(v.helper_pss_kib, Some(1234));
        assert_eq!(v.reaper_pss_kib, Some(100));
        assert_eq!(v.overhead_pss_kib, Some(1334));
        assert_eq!(
            v.netns_path,
            Some(PathBuf::from("/run/crid/sandboxes/abc/ns/net"))
        );

        // Escaped from one hierarchy: not in the pod cgroup.
        src.procs.insert(v2, "7\n400\n".into());
        assert!(!PodView::of(&r, &src, &mounts).helper_in_pod_cgroup);

        // A dead helper is in nothing and costs nothing, whatever a reused pid shows.
        src.alive = vec![];
        let v = PodView::of(&r, &src, &mounts);
        assert!(!v.helper_alive && !v.helper_in_pod_cgroup);
        assert_eq!(v.overhead_pss_kib, None);
        assert!(pods_table(&[v]).contains("40 (dead)"));
    }

    #[test]
    fn host_network_pod_has_no_netns() {
        let mut r = record("abc");
        r.namespace_modes.network = crate::sandbox::validate::MODE_NODE;
        let src = FakeProc {
            alive: vec![],
            smaps: HashMap::new(),
            procs: HashMap::new(),
        };
        assert_eq!(PodView::of(&r, &src, &[]).netns_path, None);
    }

    fn hv1(mount: &str, controller: &str) -> Hierarchy {
        Hierarchy {
            mount: PathBuf::from(mount),
            controllers: vec![controller.to_string()],
        }
    }

    fn hv2(mount: &str) -> Hierarchy {
        Hierarchy {
            mount: PathBuf::from(mount),
            controllers: vec![],
        }
    }

    /// A systemd-driver pod: slice `kubepods-besteffort-pod1.slice`, the
    /// helper's scope started.
    fn systemd_record() -> SandboxRecord {
        let mut r = record("abc");
        r.cgroup_parent = "kubepods-besteffort-pod1.slice".into();
        r.systemd = Some(crate::systemd_cgroups::PodUnits {
            slice: r.cgroup_parent.clone(),
            own_slice: false,
            helper_scope: Some("crid-pod-helper-abc.scope".into()),
        });
        r
    }

    const SLICE: &str = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice";

    #[test]
    fn a_systemd_pods_helper_is_in_its_scope_wherever_systemd_made_it() {
        let r = systemd_record();
        let hs = [
            hv1("/sys/fs/cgroup/memory", "memory"),
            hv1("/sys/fs/cgroup/cpuacct", "cpuacct"),
            hv1("/sys/fs/cgroup/systemd", "name=systemd"),
            hv2("/sys/fs/cgroup/unified"),
        ];
        let scope = |m: &str| {
            PathBuf::from(format!(
                "/sys/fs/cgroup/{m}/{SLICE}/crid-pod-helper-abc.scope"
            ))
        };
        // systemd realized memory, not cpuacct, for the scope.
        let mut src = FakeProc {
            alive: vec![40, 41],
            smaps: HashMap::from([(40, SMAPS.to_string())]),
            procs: HashMap::from([
                (scope("memory"), "40\n41\n".into()),
                (scope("systemd"), "40\n41\n".into()),
                (scope("unified"), "40\n41\n".into()),
            ]),
        };
        let v = PodView::of(&r, &src, &hs);
        assert!(v.helper_in_pod_cgroup, "{v:?}");
        assert_eq!(v.cgroup_path.as_deref(), Some(&*format!("/{SLICE}")));
        assert_eq!(
            v.helper_cgroups,
            [scope("memory"), scope("systemd"), scope("unified")]
        );
        assert_eq!(v.helper_pss_kib, Some(1234));
        assert!(pods_table(&[v]).contains("40 (in pod cgroup)"));

        // Out of the scope in a hierarchy where it exists: not in.
        src.procs.insert(scope("memory"), "41\n".into());
        assert!(!PodView::of(&r, &src, &hs).helper_in_pod_cgroup);
        src.procs.insert(scope("memory"), "40\n".into());

        // The scope missing where systemd always makes it: not in.
        src.procs.remove(&scope("unified"));
        let v = PodView::of(&r, &src, &hs);
        assert!(!v.helper_in_pod_cgroup);
        assert!(v.helper_cgroups.contains(&scope("unified")));
        src.procs.remove(&scope("systemd"));
        src.procs.insert(scope("unified"), "40\n".into());
        assert!(!PodView::of(&r, &src, &hs).helper_in_pod_cgroup);

        // No scope started yet: in nothing, the slice still named.
        let mut r = systemd_record();
        if let Some(u) = r.systemd.as_mut() {
            u.helper_scope = None;
        }
        let v = PodView::of(&r, &src, &hs);
        assert!(!v.helper_in_pod_cgroup && v.helper_cgroups.is_empty());
        assert_eq!(v.cgroup_path.as_deref(), Some(&*format!("/{SLICE}")));
    }

    #[test]
    fn a_cgroup2_only_systemd_host_checks_the_one_hierarchy() {
        let r = systemd_record();
        let hs = [hv2("/sys/fs/cgroup")];
        let dir = PathBuf::from(format!("/sys/fs/cgroup/{SLICE}/crid-pod-helper-abc.scope"));
        let src = FakeProc {
            alive: vec![40],
            smaps: HashMap::new(),
            procs: HashMap::from([(dir.clone(), "40\n".into())]),
        };
        let v = PodView::of(&r, &src, &hs);
        assert!(v.helper_in_pod_cgroup);
        assert_eq!(v.helper_cgroups, [dir]);
    }

    #[test]
    fn pods_are_found_by_id_or_unique_prefix() {
        let recs = vec![record("abc123"), record("abd456")];
        assert_eq!(find_pod(&recs, "abd").unwrap().id, "abd456");
        assert_eq!(find_pod(&recs, "abc123").unwrap().id, "abc123");
        assert!(find_pod(&recs, "ab")
            .unwrap_err()
            .to_string()
            .contains("prefix of 2"));
        assert!(find_pod(&recs, "zz").is_err());
        assert!(find_pod(&recs, "").is_err());
    }

    #[test]
    fn cgroup_paths_are_relative_to_the_deepest_mount() {
        let mounts = [
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("/sys/fs/cgroup/unified"),
        ];
        assert_eq!(
            relative_cgroup(Path::new("/sys/fs/cgroup/unified/crid/x"), &mounts),
            "/crid/x"
        );
        assert_eq!(
            relative_cgroup(Path::new("/elsewhere/x"), &mounts),
            "/elsewhere/x"
        );
    }

    #[test]
    fn procs_lists_are_matched_by_whole_pid() {
        assert!(procs_contain("1\n40\n", 40));
        assert!(!procs_contain("400\n4\n", 40));
    }
}
