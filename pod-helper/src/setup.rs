//! Set-up of one pod, in the order the design requires: cgroup first, then
//! namespaces (created and pinned, or re-adopted from the pins; in a user
//! namespace made by the pod root, see `userns`), loopback, hostname,
//! sysctls, CNI ADD from the host netns, the PID-namespace reaper, the
//! control socket, and finally dropping capabilities. Anything made before a
//! failure is undone before the error is reported.

use crate::sys;
use crate::userns::PodRoot;
use crid_common::cni_exec::CniError;
use crid_common::protocol::HelperSpec;
use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use thiserror::Error;

/// Why set-up failed.
#[derive(Debug, Error)]
pub enum SetupError {
    /// An OS call failed; `what` says which step.
    #[error("{what}: {source}")]
    Os {
        /// The step.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// CNI ADD failed (the plugin's error).
    #[error("{0}")]
    Cni(#[from] CniError),
    /// Set-up inside the pod's user namespace failed (the pod root's report).
    #[error("inside the pod's user namespace: {0}")]
    InPod(String),
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Os { what, source }
}

/// A pod whose set-up is done.
pub struct Pod {
    /// What crid asked for.
    pub spec: HelperSpec,
    /// Pid (host view) of the PID-namespace init, if any.
    pub reaper_pid: Option<u32>,
    /// Whether the reaper is this helper's own child (fresh set-up).
    pub reaper_is_child: bool,
    /// The final CNI result, on a fresh set-up with a network.
    pub cni_result: Option<serde_json::Value>,
    /// Things worth logging.
    pub notes: Vec<String>,
    /// The bound control socket.
    pub listener: UnixListener,
}

/// Namespace kinds pinned per pod, with their unshare flag.
const PINNED: [(&str, nix::sched::CloneFlags); 3] = [
    ("net", nix::sched::CloneFlags::CLONE_NEWNET),
    ("uts", nix::sched::CloneFlags::CLONE_NEWUTS),
    ("ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
];

/// Undoes a partial set-up on drop unless disarmed.
struct Undo<'a> {
    pins: Vec<PathBuf>,
    reaper: Option<u32>,
    /// CNI ADD succeeded: DEL on undo, with the result as prevResult.
    cni: Option<(&'a crid_common::cni_exec::CniInvocation, serde_json::Value)>,
    host_net: &'a File,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.reaper {
            sys::kill_reaper(pid, true);
        }
        if let Some((cni, result)) = &self.cni {
            let runner = sys::HostNetnsRunner {
                host_net: self.host_net,
            };
            if let Err(e) = cni.del(&runner, Some(result)) {
                crate::log(&format!("CNI DEL while undoing set-up: {e}"));
            }
        }
        for p in self.pins.iter().rev() {
            sys::unpin(p);
        }
    }
}

fn wanted(spec: &HelperSpec, ns: &str) -> bool {
    match ns {
        // The UTS namespace follows the network one, as with the kubelet's
        // host-network pods (which keep the node's hostname).
        "net" | "uts" => spec.namespaces.net,
        "ipc" => spec.namespaces.ipc,
        _ => false,
    }
}

/// Joins the pinned namespaces the pod has of its own.
fn join_pins(spec: &HelperSpec) -> Result<(), SetupError> {
    for (ns, flag) in PINNED {
        if wanted(spec, ns) {
            let pin = spec.ns_dir.join(ns);
            let f = File::open(&pin).map_err(os(format!("opening pin {}", pin.display())))?;
            nix::sched::setns(&f, flag)
                .map_err(std::io::Error::from)
                .map_err(os(format!("joining pinned {ns} namespace")))?;
        }
    }
    Ok(())
}

/// What is set up from inside the pod's namespaces: loopback up, hostname,
/// sysctls. Run by the helper itself, or by the pod root in a user
/// namespace (whose IPC sysctls only the namespace's root may write).
pub fn inside_pod(spec: &HelperSpec) -> Result<(), SetupError> {
    if spec.namespaces.net {
        sys::loopback_up().map_err(os("bringing lo up"))?;
        if !spec.hostname.is_empty() {
            nix::unistd::sethostname(&spec.hostname)
                .map_err(std::io::Error::from)
                .map_err(os("setting the hostname"))?;
        }
    }
    for (key, value) in &spec.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(os(format!("setting sysctl {key}={value}")))?;
    }
    Ok(())
}

/// Runs the whole set-up.
pub fn set_up(spec: &HelperSpec) -> Result<Pod, SetupError> {
    // 1. Into the pod's cgroup before doing any work, so all of it is charged
    //    to the pod.
    for dir in &spec.cgroup_procs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(os(format!("joining cgroup {}", procs.display())))?;
    }
    let mut notes = Vec::new();
    notes.extend(sys::lower_oom_score_adj());

    // 2. The host netns, for running CNI plugins later.
    let host_net = File::open("/proc/self/ns/net").map_err(os("opening the host netns"))?;

    let mut undo = Undo {
        pins: Vec::new(),
        reaper: None,
        cni: None,
        host_net: &host_net,
        armed: true,
    };
    std::fs::create_dir_all(&spec.ns_dir)
        .map_err(os(format!("creating {}", spec.ns_dir.display())))?;
    let mut cni_result = None;
    let mut pod_root = None;
    let reaper_pid;
    if let Some(adopt) = &spec.adopt {
        // 3a. Re-adopt: join the pinned namespaces; nothing is recreated, so
        //     the pod keeps its IP.
        join_pins(spec)?;
        reaper_pid = adopt.reaper_pid;
        undo.armed = false;
    } else {
        // 3b. New namespaces, each pinned by a bind mount so it outlives us.
        if let Some(userns) = &spec.userns {
            // Owned by the pod's user namespace: made by the pod root.
            let mut root = PodRoot::start(spec).map_err(os("cloning the pod's user namespace"))?;
            // Killed (and reaped) on undo, whatever it has become.
            undo.reaper = Some(root.pid);
            root.map(userns)
                .map_err(os("writing the pod's uid and gid maps"))?;
            for ns in std::iter::once("user").chain(PINNED.iter().map(|(ns, _)| *ns)) {
                if ns == "user" || wanted(spec, ns) {
                    let pin = spec.ns_dir.join(ns);
                    sys::pin_from(&root.ns_path(ns), &pin)
                        .map_err(os(format!("pinning {ns} at {}", pin.display())))?;
                    undo.pins.push(pin);
                }
            }
            // The helper itself stays in the node's user namespace, and sits
            // in the pod's other namespaces as without one.
            join_pins(spec)?;
            root.release()?;
            pod_root = Some(root);
        } else {
            let mut flags = nix::sched::CloneFlags::empty();
            for (ns, flag) in PINNED {
                if wanted(spec, ns) {
                    flags |= flag;
                }
            }
            if !flags.is_empty() {
                nix::sched::unshare(flags)
                    .map_err(std::io::Error::from)
                    .map_err(os("unsharing the pod namespaces"))?;
            }
            for (ns, _) in PINNED {
                if wanted(spec, ns) {
                    let pin = spec.ns_dir.join(ns);
                    sys::pin(ns, &pin).map_err(os(format!("pinning {ns} at {}", pin.display())))?;
                    undo.pins.push(pin);
                }
            }
            inside_pod(spec)?;
        }
        // 4. CNI ADD, plugins run in the host netns; on failure DEL releases
        //    whatever the plugins that ran had allocated.
        if let Some(cni) = &spec.cni {
            let runner = sys::HostNetnsRunner {
                host_net: &host_net,
            };
            match cni.add(&runner) {
                Ok(r) => {
                    undo.cni = Some((cni, r.clone()));
                    cni_result = Some(r);
                }
                Err(e) => {
                    if let Err(del) = cni.del(&runner, None) {
                        crate::log(&format!("CNI DEL after failed ADD: {del}"));
                    }
                    return Err(e.into());
                }
            }
        }
        // 5. The PID namespace's init, forked last so that CNI plugins are
        //    not in the pod's PID namespace (in a user namespace, the pod
        //    root is that init).
        reaper_pid = match &pod_root {
            Some(root) => root.is_init.then_some(root.pid),
            None if spec.namespaces.pid => {
                let pid =
                    sys::start_reaper().map_err(os("starting the pod's PID-namespace init"))?;
                undo.reaper = Some(pid);
                Some(pid)
            }
            None => None,
        };
    }

    // 6. The control socket.
    let _ = std::fs::remove_file(&spec.socket);
    let listener = crid_common::protocol::with_socket_path(&spec.socket, |p| UnixListener::bind(p))
        .map_err(os(format!("binding {}", spec.socket.display())))?;

    // 7. Only what later duties need stays; as the pod's shim the helper
    //    runs the OCI runtime, which needs what containerd's shim has, and
    //    mounts the containers' overlay root filesystems: overlayfs keeps
    //    the mounter's credentials and uses them for every later copy-up
    //    (chown, mknod, setfcap, DAC), so they stay whole. (Lowering only
    //    the effective set between mounts would leave the permitted set
    //    whole, so a compromised helper could raise it again: no gain.)
    if spec.shim.is_none() {
        notes.extend(sys::drop_capabilities());
    }
    if let Some(root) = pod_root {
        root.commit()
            .map_err(os("handing the pod over to the pod root"))?;
    }
    undo.armed = false;
    Ok(Pod {
        spec: spec.clone(),
        reaper_pid,
        reaper_is_child: spec.adopt.is_none(),
        cni_result,
        notes,
        listener,
    })
}
