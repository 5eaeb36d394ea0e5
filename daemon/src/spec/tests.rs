//! Whole-spec tests of [`generate`]: each rule is tested in its module; these
//! check that the pieces land in the right places of the spec.

use super::testing::{FakeHost, FakeRootfs};
use super::*;
use crid_proto::cri::{
    Capability as CriCaps, ContainerMetadata, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount as CriMount, MountPropagation, NamespaceMode,
    NamespaceOption, PodSandboxMetadata,
};
use oci_spec::runtime::{LinuxNamespaceType, Mount};

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nvideo:x:44:app\n";

fn facts() -> SandboxFacts {
    SandboxFacts {
        sandbox_id: "sb1".into(),
        netns_path: Some("/run/crid/netns/sb1".into()),
        ipc_ns_path: Some("/proc/100/ns/ipc".into()),
        uts_ns_path: Some("/proc/100/ns/uts".into()),
        pid_ns_path: Some("/proc/101/ns/pid".into()),
        hostname: "web-0".into(),
        etc_hosts_path: Some("/var/lib/crid/pods/sb1/hosts".into()),
        resolv_conf_path: Some("/var/lib/crid/pods/sb1/resolv.conf".into()),
        hostname_path: Some("/var/lib/crid/pods/sb1/hostname".into()),
        shm_path: Some("/run/crid/pods/sb1/shm".into()),
        cgroup_parent: "/kubepods/burstable/podabc".into(),
        ..Default::default()
    }
}

fn pod_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/podabc".into(),
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "echo hi".into()],
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "test".into(),
        }],
        tty: true,
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 32 << 20,
                oom_score_adj: 500,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..sc
            }),
        }),
        ..Default::default()
    }
}

fn image() -> ImageConfig {
    let mut c = ImageConfig::default();
    c.set_env(Some(vec!["PATH=/usr/bin:/bin".into()]));
    c.set_working_dir(Some("/app".into()));
    c.set_user(Some("app".into()));
    c
}

fn gen(
    config: &ContainerConfig,
    sandbox: &SandboxFacts,
    host: &FakeHost,
) -> Result<Spec, SpecError> {
    let host_facts = HostFacts {
        swap_controller: true,
        ..Default::default()
    };
    gen_on(config, sandbox, host, &host_facts)
}

/// [`gen`] on a node with these facts.
fn gen_on(
    config: &ContainerConfig,
    sandbox: &SandboxFacts,
    host: &FakeHost,
    host_facts: &HostFacts,
) -> Result<Spec, SpecError> {
    let pod = pod_config();
    let img = image();
    let inputs = SpecInputs {
        container_id: "c1",
        config,
        sandbox_config: &pod,
        image_config: Some(&img),
        image_name: "registry.local/app:1",
        sandbox,
        host: host_facts,
        target_pid_ns_path: None,
        recursive_read_only: false,
        rootfs_path: None,
    };
    generate(&inputs, host, &FakeRootfs::new(Some(PASSWD), Some(GROUP)))
}

fn mount<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

#[test]
fn a_plain_container() {
    let spec = gen(
        &container(Default::default()),
        &facts(),
        &FakeHost::default(),
    )
    .unwrap();
    assert_eq!(spec.version(), OCI_VERSION);
    let root = spec.root().clone().unwrap();
    assert_eq!(root.path(), Path::new("rootfs"));
    assert_eq!(root.readonly(), Some(false));
    assert_eq!(spec.hostname(), &None);

    let p = spec.process().clone().unwrap();
    assert_eq!(p.args().clone().unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
    assert_eq!(
        p.env().clone().unwrap(),
        vec!["PATH=/usr/bin:/bin", "HOSTNAME=web-0", "MODE=test"]
    );
    assert_eq!(p.cwd(), Path::new("/app"));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert_eq!(p.user().additional_gids().clone().unwrap(), vec![44, 1000]);
    assert_eq!(p.rlimits(), &None);
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!(p.oom_score_adj(), Some(500));
    let caps = p.capabilities().clone().unwrap();
    assert_eq!(caps.effective().clone().unwrap().len(), 14);

    let linux = spec.linux().clone().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/burstable/podabc/c1"))
    );
    let ns: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .clone()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use LinuxNamespaceType::*;
    assert_eq!(ns, vec![Pid, Ipc, Uts, Mount, Network]);
    // Pod sysctls are not repeated per container.
    assert_eq!(linux.sysctl(), &None);
    assert_eq!(linux.rootfs_propagation(), &None);
    let res = linux.resources().clone().unwrap();
    assert_eq!(res.cpu().clone().unwrap().shares(), Some(256));
    assert_eq!(res.memory().unwrap().limit(), Some(32 << 20));
    let rules = res.devices().clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(!rules[0].allow());
    assert_eq!(rules[0].access().as_deref(), Some("rwm"));

    for dest in [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/dev/shm",
        "/proc",
    ] {
        assert!(mount(&spec, dest).is_some(), "{dest}");
    }

    let ann = spec.annotations().clone().unwrap();
    assert_eq!(ann[annotations::CONTAINER_TYPE], "container");
    assert_eq!(ann[annotations::SANDBOX_ID], "sb1");
    assert_eq!(ann[annotations::SANDBOX_NAME], "web-0");
    assert_eq!(ann[annotations::SANDBOX_NAMESPACE], "default");
    assert_eq!(ann[annotations::SANDBOX_UID], "uid-1");
    assert_eq!(ann[annotations::CONTAINER_NAME], "app");
    assert_eq!(ann[annotations::IMAGE_NAME], "registry.local/app:1");

    // It serializes to the config.json runc reads.
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], OCI_VERSION);
    assert_eq!(
        json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        14
    );
    assert!(json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("CAP_NET_BIND_SERVICE")));
    assert!(json["process"].get("rlimits").is_none());
    assert_eq!(
        json["linux"]["cgroupsPath"],
        "/kubepods/burstable/podabc/c1"
    );
}

#[test]
fn readonly_rootfs_no_new_privs_and_caps() {
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities: Some(CriCaps {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["ALL".into()],
            add_ambient_capabilities: vec![],
        }),
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        ..Default::default()
    };
    let spec = gen(&container(sc), &facts(), &FakeHost::default()).unwrap();
    assert_eq!(spec.root().clone().unwrap().readonly(), Some(true));
    let p = spec.process().clone().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    let eff = p
        .capabilities()
        .clone()
        .unwrap()
        .effective()
        .clone()
        .unwrap();
    assert_eq!(eff.len(), 1);
    let linux = spec.linux().clone().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), vec!["/proc/kcore"]);
    assert_eq!(linux.readonly_paths().clone().unwrap(), vec!["/proc/sys"]);
    let hosts = mount(&spec, "/etc/hosts").unwrap();
    assert!(hosts.options().clone().unwrap().contains(&"ro".to_string()));
}

#[test]
fn privileged_needs_a_privileged_pod() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let err = gen(&container(sc.clone()), &facts(), &FakeHost::default()).unwrap_err();
    assert!(matches!(err, SpecError::FailedPrecondition(_)));
    let e: crate::error::Error = err.into();
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::FailedPrecondition
    );

    // The pod config marking the sandbox privileged is enough.
    let mut pod = pod_config();
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let config = container(sc);
    let img = image();
    let host_facts = HostFacts::default();
    let sandbox = facts();
    let inputs = SpecInputs {
        container_id: "c1",
        config: &config,
        sandbox_config: &pod,
        image_config: Some(&img),
        image_name: "i",
        sandbox: &sandbox,
        host: &host_facts,
        target_pid_ns_path: None,
        recursive_read_only: false,
        rootfs_path: None,
    };
    let host = FakeHost::default().with_host_devices(vec![devices::DeviceNode {
        path: "/dev/null".into(),
        typ: oci_spec::runtime::LinuxDeviceType::C,
        major: 1,
        minor: 3,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }]);
    let spec = generate(&inputs, &host, &FakeRootfs::new(Some(PASSWD), Some(GROUP))).unwrap();
    let p = spec.process().clone().unwrap();
    assert_eq!(
        p.capabilities()
            .clone()
            .unwrap()
            .effective()
            .clone()
            .unwrap()
            .len(),
        41
    );
    let linux = spec.linux().clone().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap_or_default().len(), 0);
    assert_eq!(linux.readonly_paths().clone().unwrap_or_default().len(), 0);
    let rules = linux
        .resources()
        .clone()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert_eq!(linux.devices().clone().unwrap().len(), 1);
    let sys = mount(&spec, "/sys").unwrap();
    assert!(sys.options().clone().unwrap().contains(&"rw".to_string()));
}

#[test]
fn cri_mount_with_host_to_container_propagation_sets_rootfs_rslave() {
    let mut config = container(Default::default());
    config.mounts = vec![
        CriMount {
            container_path: "/var/lib/kubelet/pods".into(),
            host_path: "/var/lib/kubelet/pods".into(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        CriMount {
            container_path: "/etc/hosts".into(),
            host_path: "/srv/hosts".into(),
            readonly: true,
            ..Default::default()
        },
    ];
    let host = FakeHost::default().with_propagation("/var/lib", mounts::Propagation::Shared);
    let spec = gen(&config, &facts(), &host).unwrap();
    let linux = spec.linux().clone().unwrap();
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("rslave"));
    let hosts: Vec<&Mount> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/srv/hosts")));
}

#[test]
fn errors_map_to_grpc_codes() {
    // Unknown user in the image -> InvalidArgument.
    let sc = LinuxContainerSecurityContext {
        run_as_username: "nobody-here".into(),
        ..Default::default()
    };
    let err = gen(&container(sc), &facts(), &FakeHost::default()).unwrap_err();
    let e: crate::error::Error = err.into();
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
    // Missing pod network namespace -> FailedPrecondition.
    let mut f = facts();
    f.netns_path = None;
    let err = gen(&container(Default::default()), &f, &FakeHost::default()).unwrap_err();
    assert!(matches!(err, SpecError::FailedPrecondition(_)));
    // CDI devices are refused, not dropped.
    let mut config = container(Default::default());
    config.cdi_devices = vec![crid_proto::cri::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    assert!(matches!(
        gen(&config, &facts(), &FakeHost::default()),
        Err(SpecError::Unsupported("CDI devices"))
    ));
    // Unsupported feature -> InvalidArgument naming it.
    let e: crate::error::Error = SpecError::Unsupported("idmapped mounts").into();
    let s = tonic::Status::from(e);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("idmapped"));
}

#[test]
fn image_without_config_and_no_resources() {
    let mut config = container(Default::default());
    config.linux = None;
    let pod = pod_config();
    let sandbox = facts();
    let host_facts = HostFacts::default();
    let inputs = SpecInputs {
        container_id: "c1",
        config: &config,
        sandbox_config: &pod,
        image_config: None,
        image_name: "i",
        sandbox: &sandbox,
        host: &host_facts,
        target_pid_ns_path: None,
        recursive_read_only: false,
        rootfs_path: None,
    };
    let spec = generate(&inputs, &FakeHost::default(), &FakeRootfs::new(None, None)).unwrap();
    let p = spec.process().clone().unwrap();
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.oom_score_adj(), None);
    assert_eq!(
        p.env().clone().unwrap(),
        vec![
            process::DEFAULT_PATH_ENV.to_string(),
            "HOSTNAME=web-0".into(),
            "MODE=test".into()
        ]
    );
    // No security context: PID mode POD joins the pod's PID namespace.
    let ns = spec.linux().clone().unwrap().namespaces().clone().unwrap();
    assert_eq!(ns[0].path().as_deref(), Some(Path::new("/proc/101/ns/pid")));
}

#[test]
fn containerd_any_round_trips() {
    let spec = gen(
        &container(Default::default()),
        &facts(),
        &FakeHost::default(),
    )
    .unwrap();
    let any = to_containerd_any(&spec).unwrap();
    assert_eq!(
        any.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    );
    let back: Spec = serde_json::from_slice(&any.value).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn seccomp_and_apparmor_land_in_the_spec() {
    use crid_proto::cri::security_profile::ProfileType;
    use crid_proto::cri::SecurityProfile;
    let profile = |t: ProfileType, r: &str| {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        })
    };
    // RuntimeDefault: crid's profile, evaluated with the container's caps.
    let sc = LinuxContainerSecurityContext {
        seccomp: profile(ProfileType::RuntimeDefault, ""),
        apparmor: profile(ProfileType::RuntimeDefault, ""),
        ..Default::default()
    };
    let spec = gen(&container(sc), &facts(), &FakeHost::default()).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["linux"]["seccomp"]["defaultErrnoRet"], 1);
    let names: Vec<&str> = json["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["names"].as_array().unwrap())
        .filter_map(|n| n.as_str())
        .collect();
    assert!(names.contains(&"chroot")); // CAP_SYS_CHROOT is a default cap
    assert!(!names.contains(&"mount"));
    // No AppArmor on the (default) node: no profile, no error.
    assert!(json["process"].get("apparmorProfile").is_none());

    // Unset: unconfined.
    let spec = gen(
        &container(Default::default()),
        &facts(),
        &FakeHost::default(),
    )
    .unwrap();
    assert_eq!(spec.linux().clone().unwrap().seccomp(), &None);

    // Localhost seccomp and AppArmor on a node with AppArmor.
    let config = container(LinuxContainerSecurityContext {
        seccomp: profile(ProfileType::Localhost, "/p.json"),
        apparmor: profile(ProfileType::Localhost, "my-aa"),
        ..Default::default()
    });
    let view = FakeHost::default()
        .with_profile(
            "/p.json",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .with_apparmor_profile("my-aa");
    let host_facts = HostFacts {
        apparmor_enabled: true,
        ..Default::default()
    };
    let spec = gen_on(&config, &facts(), &view, &host_facts).unwrap();
    let seccomp = spec.linux().clone().unwrap().seccomp().clone().unwrap();
    assert_eq!(seccomp.syscalls().clone().unwrap()[0].names(), &["mkdir"]);
    assert_eq!(
        spec.process()
            .clone()
            .unwrap()
            .apparmor_profile()
            .as_deref(),
        Some("my-aa")
    );
    assert!(check_security_profiles(&config, &host_facts, &view).is_ok());

    // A missing file: InvalidArgument from the early check and from generate.
    let gone = container(LinuxContainerSecurityContext {
        seccomp: profile(ProfileType::Localhost, "/gone.json"),
        ..Default::default()
    });
    for err in [
        check_security_profiles(&gone, &host_facts, &view).unwrap_err(),
        gen_on(&gone, &facts(), &view, &host_facts).unwrap_err(),
    ] {
        let status = tonic::Status::from(crate::error::Error::from(err));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("/gone.json"), "{status:?}");
    }
}

#[test]
fn a_container_in_a_user_namespaced_pod() {
    let m = crid_common::protocol::IdMap {
        container_id: 0,
        host_id: 1000,
        length: 100000,
    };
    let g = crid_common::protocol::IdMap { host_id: 3000, ..m };
    let mut sandbox = facts();
    sandbox.userns = Some(PodUserns {
        path: "/run/crid/sandboxes/sb1/ns/user".into(),
        ns: crid_common::protocol::UserNamespace {
            uids: vec![m],
            gids: vec![g],
        },
    });
    let pod = pod_config();
    let img = image();
    let host_facts = HostFacts::default();
    let config = container(Default::default());
    let rootfs = Path::new("/run/crid/containers/c1/rootfs");
    let inputs = SpecInputs {
        container_id: "c1",
        config: &config,
        sandbox_config: &pod,
        image_config: Some(&img),
        image_name: "registry.local/app:1",
        sandbox: &sandbox,
        host: &host_facts,
        target_pid_ns_path: None,
        recursive_read_only: false,
        rootfs_path: Some(rootfs),
    };
    let spec = generate(
        &inputs,
        &FakeHost::default(),
        &FakeRootfs::new(Some(PASSWD), Some(GROUP)),
    )
    .unwrap();
    // The idmapped rootfs crid mounts, by absolute path.
    assert_eq!(spec.root().as_ref().unwrap().path(), rootfs);
    let linux = spec.linux().as_ref().unwrap();
    let user = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .expect("a user namespace");
    assert_eq!(
        user.path().as_deref(),
        Some(Path::new("/run/crid/sandboxes/sb1/ns/user"))
    );
    let ids = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        v.as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(linux.uid_mappings()), vec![(0, 1000, 100000)]);
    assert_eq!(ids(linux.gid_mappings()), vec![(0, 3000, 100000)]);
    // The JSON runc reads has the mappings in the runtime-spec's names.
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        json["linux"]["uidMappings"],
        serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 100000}])
    );
    assert_eq!(json["root"]["path"], "/run/crid/containers/c1/rootfs");

    // Without a user namespace: none in the spec, the bundle's rootfs.
    let spec = gen(&config, &facts(), &FakeHost::default()).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new(ROOTFS));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
}
