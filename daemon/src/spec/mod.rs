//! OCI runtime spec generation for CreateContainer (issue 5): CRI container
//! config + pod config + image config + sandbox facts -> `oci_spec::runtime::Spec`.
//!
//! Pure: everything it needs from the OS comes in as plain data
//! ([`SandboxFacts`], [`HostFacts`]) or through two small traits
//! ([`HostView`] for mount propagation and device nodes, [`user::RootfsFiles`] for
//! the image's /etc/passwd and /etc/group), so every rule is unit-tested with fakes.
//!
//! The behaviour mirrors containerd's CRI plugin 1.6/1.7
//! (`pkg/cri/server/container_create_linux.go`, `pkg/cri/opts/spec_linux.go`,
//! `oci/spec.go`, `oci/spec_opts.go`); each module cites what it mirrors.

pub mod apparmor;
pub mod devices;
pub mod host;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod seccomp;
pub mod security;
pub mod security_profile;
pub mod user;
pub mod validate;

use crid_proto::cri::{ContainerConfig, PodSandboxConfig};
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{LinuxBuilder, LinuxDeviceCgroup, Process, RootBuilder, Spec};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use devices::DeviceNode;
pub use host::KernelVersion;
pub use mounts::Propagation;
pub use user::RootfsFiles;

/// The OCI runtime spec version we emit (what runc 1.1 and containerd 1.6 speak).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Rootfs path inside the bundle, relative like containerd's `WithRelativeRoot("rootfs")`.
pub const ROOTFS: &str = "rootfs";

/// Annotations containerd's CRI plugin puts on every container spec
/// (`pkg/cri/annotations`); tools like NRI plugins and runc hooks read them.
pub mod annotations {
    /// "container" for application containers.
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    /// Value of [`CONTAINER_TYPE`] for a container.
    pub const CONTAINER_TYPE_CONTAINER: &str = "container";
    /// The pod sandbox id.
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    /// The pod's namespace.
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    /// The pod's name.
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    /// The pod's uid.
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    /// The container's name (metadata.name).
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// The image name the kubelet asked for.
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// Why a spec could not be generated.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The request is malformed or asks for something the image cannot give
    /// (unknown user, no command, bad path, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but the sandbox or host cannot satisfy it
    /// (privileged container in an unprivileged pod, missing namespace, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A feature crid does not implement yet.
    #[error("{0} is not supported by crid yet")]
    Unsupported(&'static str),
    /// Reading a host or image fact failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

impl SpecError {
    /// Shorthand for an I/O failure with context.
    pub fn io(what: impl Into<String>, source: io::Error) -> SpecError {
        SpecError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<SpecError> for crate::error::Error {
    fn from(e: SpecError) -> Self {
        use crate::error::Error;
        match e {
            SpecError::InvalidArgument(m) => Error::InvalidArgument(m),
            SpecError::FailedPrecondition(m) => Error::FailedPrecondition(m),
            SpecError::Unsupported(what) => {
                Error::InvalidArgument(format!("{what} is not supported by crid yet"))
            }
            e @ SpecError::Io { .. } => Error::Internal(e.to_string()),
        }
    }
}

/// What the pod sandbox provides to its containers. The sandbox record maps onto
/// this; every path is a host path. `None` means "the sandbox has none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFacts {
    /// The pod sandbox id (annotation only).
    pub sandbox_id: String,
    /// Pinned network namespace of the pod (e.g. /run/crid/netns/<id>); ignored
    /// when `host_network`.
    pub netns_path: Option<PathBuf>,
    /// The pod's IPC namespace (e.g. /proc/<helper pid>/ns/ipc); ignored when `host_ipc`.
    pub ipc_ns_path: Option<PathBuf>,
    /// The pod's UTS namespace; ignored when `host_network` (a host-network pod
    /// uses the node's UTS namespace, as with containerd).
    pub uts_ns_path: Option<PathBuf>,
    /// The pod's shared PID namespace, joined by containers whose PID mode is POD.
    pub pid_ns_path: Option<PathBuf>,
    /// The hostname containers see as $HOSTNAME: the pod's hostname, or the
    /// node's when the pod config leaves it empty (host network).
    pub hostname: String,
    /// The pod's /etc/hosts file.
    pub etc_hosts_path: Option<PathBuf>,
    /// The pod's /etc/resolv.conf file.
    pub resolv_conf_path: Option<PathBuf>,
    /// The pod's /etc/hostname file.
    pub hostname_path: Option<PathBuf>,
    /// The pod's /dev/shm (a tmpfs the sandbox mounted); ignored when `host_ipc`,
    /// where the node's /dev/shm is bound instead.
    pub shm_path: Option<PathBuf>,
    /// The pod's cgroup parent (cgroupfs syntax, e.g. /kubepods/besteffort/pod<uid>);
    /// empty: containers get no cgroups path (runc's default).
    pub cgroup_parent: String,
    /// The pod uses the node's network (and UTS) namespace.
    pub host_network: bool,
    /// The pod uses the node's IPC namespace.
    pub host_ipc: bool,
    /// The pod uses the node's PID namespace.
    pub host_pid: bool,
    /// The pod sandbox was created privileged (required for privileged containers).
    pub privileged: bool,
    /// The pod's own user namespace, joined by every container; None: the node's.
    pub userns: Option<PodUserns>,
}

/// A pod's user namespace as its containers join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserns {
    /// Its pin (`<ns dir>/user`).
    pub path: PathBuf,
    /// Its uid and gid mappings (runc wants them beside the path).
    pub ns: crid_common::protocol::UserNamespace,
}

/// Facts about the node, read once at start ([`host::read_host_facts`]).
/// `Default` is for tests: every capability, v1, no swap/hugetlb controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// /sys/fs/cgroup is a cgroup2 mount (unified mode; hybrid counts as v1).
    pub cgroup_v2: bool,
    /// The memory swap controller exists (memory.memsw.* on v1, memory.swap.max on v2).
    pub swap_controller: bool,
    /// The hugetlb controller exists.
    pub hugetlb_controller: bool,
    /// crid's own oom_score_adj: lower requests are raised to it, since crid
    /// may lack CAP_SYS_RESOURCE (containerd's `restrict_oom_score_adj`).
    pub own_oom_score_adj: Option<i32>,
    /// The capabilities crid holds (its `CapEff`, see
    /// [`security::capabilities_from_mask`]): what privileged containers and
    /// "ALL" get, like containerd's `WithAllCurrentCapabilities`.
    pub capabilities: Vec<oci_spec::runtime::Capability>,
    /// The kernel has seccomp (/proc/self/status has a `Seccomp:` line).
    pub seccomp_enabled: bool,
    /// The kernel has AppArmor enabled (runc's test).
    pub apparmor_enabled: bool,
    /// The kernel release, for seccomp rules with `minKernel`.
    pub kernel: Option<KernelVersion>,
    /// The node's architecture (Rust's name: `x86_64`, `aarch64`, ...), for
    /// seccomp architectures and arch-specific rules.
    pub arch: String,
}

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts {
            cgroup_v2: false,
            swap_controller: false,
            hugetlb_controller: false,
            own_oom_score_adj: None,
            capabilities: security::all_capabilities(),
            seccomp_enabled: true,
            apparmor_enabled: false,
            kernel: Some(KernelVersion(6, 1, 0)),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// What the OS must answer while generating a spec (real impl: [`SystemHost`]).
pub trait HostView {
    /// Propagation of the mount that holds `path` (from /proc/self/mountinfo).
    fn mount_propagation(&self, path: &Path) -> io::Result<Propagation>;
    /// `path` with every symlink resolved (mount sources are bound by their real path).
    fn real_path(&self, path: &Path) -> io::Result<PathBuf>;
    /// Device nodes at `path`: one entry with an empty relative path for a device
    /// node, every node below it (relative paths) for a directory.
    fn device_nodes(&self, path: &Path) -> io::Result<Vec<(PathBuf, DeviceNode)>>;
    /// Every device node of the host's /dev, for privileged containers.
    fn host_devices(&self) -> io::Result<Vec<DeviceNode>>;
    /// The bytes of a seccomp profile file on the node (at most
    /// [`seccomp::MAX_PROFILE_BYTES`]).
    fn read_profile(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether the kernel has an AppArmor profile of this name loaded.
    fn apparmor_profile_loaded(&self, name: &str) -> io::Result<bool>;
    /// Loads (or replaces) crid's default AppArmor profile in the kernel.
    fn load_default_apparmor_profile(&self) -> io::Result<()>;
}

/// Everything [`generate`] reads.
pub struct SpecInputs<'a> {
    /// The container id crid assigned (cgroups path).
    pub container_id: &'a str,
    /// CreateContainerRequest.config.
    pub config: &'a ContainerConfig,
    /// CreateContainerRequest.sandbox_config.
    pub sandbox_config: &'a PodSandboxConfig,
    /// The image's config part (`ImageConfiguration::config()`), if it has one.
    pub image_config: Option<&'a ImageConfig>,
    /// The image name as the kubelet gave it (annotation only).
    pub image_name: &'a str,
    /// The pod sandbox's runtime facts.
    pub sandbox: &'a SandboxFacts,
    /// Node facts.
    pub host: &'a HostFacts,
    /// Host path of the TARGET container's PID namespace (e.g. /proc/<pid>/ns/pid)
    /// when the PID mode is TARGET; CreateContainer resolves target_id to it.
    pub target_pid_ns_path: Option<&'a Path>,
    /// The pod's runtime handler can apply recursive read-only mounts
    /// ([`crate::runtime_handler::HandlerFeatures`]).
    pub recursive_read_only: bool,
    /// Absolute path of the idmapped rootfs crid mounts itself in a pod with
    /// a user namespace; None: the bundle's `rootfs`, mounted by the shim.
    pub rootfs_path: Option<&'a Path>,
}

/// Builds the container's OCI runtime spec, following the kubelet's contract and
/// containerd's CRI plugin defaults.
pub fn generate(
    inputs: &SpecInputs<'_>,
    host: &dyn HostView,
    rootfs: &dyn RootfsFiles,
) -> Result<Spec, SpecError> {
    let config = inputs.config;
    validate::request_size(config)?;
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let privileged = sc.privileged;
    if privileged && !sandbox_allows_privileged(inputs) {
        // containerd: "no privileged container allowed in sandbox".
        return Err(SpecError::FailedPrecondition(
            "no privileged container allowed in an unprivileged pod sandbox".into(),
        ));
    }

    if !config.cdi_devices.is_empty() {
        // Silently dropping a requested device would start the container
        // without it; refuse until CDI is supported.
        return Err(SpecError::Unsupported("CDI devices"));
    }

    let image_default = ImageConfig::default();
    let image = inputs.image_config.unwrap_or(&image_default);

    // Process: args, env, cwd, terminal, user.
    let args = process::args(config, image)?;
    let env = process::env(&inputs.sandbox.hostname, image, config);
    let cwd = process::cwd(config, image);
    let user = user::resolve(&sc, image, rootfs)?;
    let caps = security::capabilities(&sc, &inputs.host.capabilities)?;
    let bounding: Vec<_> = caps.bounding().iter().flatten().copied().collect();
    let seccomp = seccomp::linux_seccomp(&sc, &bounding, inputs.host, host)?;
    let apparmor_profile = apparmor::profile(&sc, inputs.host, host)?;
    let oom_score_adj = resources::oom_score_adj(config, inputs.host)?;

    let mut proc = Process::default();
    proc.set_terminal(Some(config.tty));
    proc.set_args(Some(args));
    proc.set_env(Some(env));
    proc.set_cwd(cwd);
    proc.set_user(user);
    proc.set_capabilities(Some(caps));
    // containerd's WithoutDefaultSecuritySettings drops the default RLIMIT_NOFILE:
    // containers inherit the shim's limits.
    proc.set_rlimits(None);
    // containerd applies WithNewPrivileges, then WithNoNewPrivileges only on request.
    proc.set_no_new_privileges(Some(sc.no_new_privs));
    proc.set_oom_score_adj(oom_score_adj);
    proc.set_apparmor_profile(apparmor_profile);
    proc.set_selinux_label(None);

    // Mounts and rootfs propagation.
    let mount_plan = mounts::plan(
        config,
        &sc,
        inputs.sandbox,
        privileged,
        inputs.recursive_read_only,
        host,
    )?;

    // Linux section.
    let (linux_devices, mut device_rules) = devices::devices(config, privileged, host)?;
    let mut res = resources::resources(config, inputs.host)?;
    let mut cgroup_rules = vec![deny_all_devices()];
    if privileged {
        // oci.WithAllDevicesAllowed.
        cgroup_rules = vec![allow_all_devices()];
        device_rules.clear();
    }
    cgroup_rules.append(&mut device_rules);
    res.set_devices(Some(cgroup_rules));

    let namespaces = namespaces::namespaces(
        &sc,
        inputs.sandbox,
        inputs.host.cgroup_v2,
        inputs.target_pid_ns_path,
    )?;
    let (masked, readonly) = security::masked_and_readonly_paths(&sc);

    let mut linux = LinuxBuilder::default()
        .resources(res)
        .namespaces(namespaces)
        .devices(linux_devices)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()
        .map_err(|e| SpecError::InvalidArgument(format!("building the linux section: {e}")))?;
    if let Some(p) = mount_plan.rootfs_propagation {
        linux.set_rootfs_propagation(Some(p.to_string()));
    }
    if let Some(path) = resources::cgroups_path(&inputs.sandbox.cgroup_parent, inputs.container_id)?
    {
        linux.set_cgroups_path(Some(path));
    }
    linux.set_seccomp(seccomp);
    if let Some(u) = &inputs.sandbox.userns {
        // runc 1.1 wants the mappings of a user namespace it joins by path.
        linux.set_uid_mappings(Some(namespaces::id_mappings(&u.ns.uids)));
        linux.set_gid_mappings(Some(namespaces::id_mappings(&u.ns.gids)));
    }
    // Pod sysctls are the sandbox's business (set once in the pod's namespaces):
    // containerd does not repeat them per container, nor do we.
    linux.set_sysctl(None);

    let root = RootBuilder::default()
        .path(inputs.rootfs_path.unwrap_or(Path::new(ROOTFS)))
        .readonly(sc.readonly_rootfs)
        .build()
        .map_err(|e| SpecError::InvalidArgument(format!("building the root: {e}")))?;

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_process(Some(proc));
    spec.set_hostname(None);
    spec.set_mounts(Some(mount_plan.mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(spec_annotations(inputs)));
    Ok(spec)
}

/// The container's seccomp and AppArmor requests alone (seccomp evaluated
/// without capabilities; every rule is checked either way). CreateContainer
/// runs this before it creates anything, so a bad profile leaves nothing behind.
pub fn check_security_profiles(
    config: &ContainerConfig,
    host: &HostFacts,
    view: &dyn HostView,
) -> Result<(), SpecError> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    seccomp::linux_seccomp(&sc, &[], host, view)?;
    apparmor::profile(&sc, host, view)?;
    Ok(())
}

/// Type URL containerd registers for the OCI runtime spec (typeurl:
/// `types.containerd.io` + `opencontainers/runtime-spec/<major>/Spec`).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The spec as containerd stores it in `Container.spec`: JSON in an `Any`.
pub fn to_containerd_any(spec: &Spec) -> Result<prost_types::Any, SpecError> {
    let value = serde_json::to_vec(spec)
        .map_err(|e| SpecError::io("encoding the OCI spec", io::Error::other(e)))?;
    Ok(prost_types::Any {
        type_url: SPEC_TYPE_URL.to_string(),
        value,
    })
}

/// A privileged container needs a privileged sandbox (the pod config says so).
fn sandbox_allows_privileged(inputs: &SpecInputs<'_>) -> bool {
    inputs.sandbox.privileged
        || inputs
            .sandbox_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
}

/// containerd's default device cgroup rule: deny everything (runc adds its own
/// allow-list for /dev/null, /dev/zero, ... on top).
fn deny_all_devices() -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(false);
    r.set_access(Some("rwm".into()));
    r
}

/// `a *:* rwm`, for privileged containers.
fn allow_all_devices() -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_access(Some("rwm".into()));
    r
}

/// containerd's CRI annotations. The kubelet's own labels and annotations are
/// recorded by crid's container record, not in the spec (containerd passes
/// them through only when a runtime's `container_annotations` allows them).
fn spec_annotations(inputs: &SpecInputs<'_>) -> HashMap<String, String> {
    let md = inputs.sandbox_config.metadata.clone().unwrap_or_default();
    let name = inputs
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    HashMap::from([
        (
            annotations::CONTAINER_TYPE.to_string(),
            annotations::CONTAINER_TYPE_CONTAINER.to_string(),
        ),
        (
            annotations::SANDBOX_ID.to_string(),
            inputs.sandbox.sandbox_id.clone(),
        ),
        (annotations::SANDBOX_NAMESPACE.to_string(), md.namespace),
        (annotations::SANDBOX_NAME.to_string(), md.name),
        (annotations::SANDBOX_UID.to_string(), md.uid),
        (annotations::CONTAINER_NAME.to_string(), name),
        (
            annotations::IMAGE_NAME.to_string(),
            inputs.image_name.to_string(),
        ),
    ])
}

/// The real [`HostView`]: /proc/self/mountinfo and the host's /dev.
pub struct SystemHost;

impl HostView for SystemHost {
    fn mount_propagation(&self, path: &Path) -> io::Result<Propagation> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let real = std::fs::canonicalize(path)?;
        mounts::propagation_from_mountinfo(&info, &real).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no mount holds {}", real.display()),
            )
        })
    }

    fn real_path(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn device_nodes(&self, path: &Path) -> io::Result<Vec<(PathBuf, DeviceNode)>> {
        devices::system_device_nodes(path)
    }

    fn host_devices(&self) -> io::Result<Vec<DeviceNode>> {
        devices::system_host_devices()
    }

    fn read_profile(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(seccomp::MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > seccomp::MAX_PROFILE_BYTES {
            return Err(io::Error::other(format!(
                "larger than {} bytes",
                seccomp::MAX_PROFILE_BYTES
            )));
        }
        Ok(bytes)
    }

    fn apparmor_profile_loaded(&self, name: &str) -> io::Result<bool> {
        apparmor::system_profile_loaded(name)
    }

    fn load_default_apparmor_profile(&self) -> io::Result<()> {
        apparmor::system_load_default()
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod runc_tests;

#[cfg(test)]
mod prop_tests;
