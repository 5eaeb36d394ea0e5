//! Hostile and random CreateContainer input (issue 14): [`generate`] never
//! panics, and every rejection is a clear InvalidArgument (or
//! FailedPrecondition / unsupported, also shown to the kubelet as such),
//! never an internal error. Runs a few dozen random cases in `cargo test`;
//! `PROPTEST_CASES=100000 cargo test -p crid prop_tests` runs longer.

use super::testing::{FakeHost, FakeRootfs};
use super::validate::{self, MAX_MOUNTS};
use super::*;
use crid_proto::cri::{
    Capability, ContainerMetadata, Device, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount as CriMount, NamespaceOption, PodSandboxMetadata,
};
use proptest::prelude::*;

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\n";

fn facts() -> SandboxFacts {
    SandboxFacts {
        sandbox_id: "sb1".into(),
        hostname: "web-0".into(),
        cgroup_parent: "/kubepods/podabc".into(),
        ..Default::default()
    }
}

fn gen(config: &ContainerConfig) -> std::result::Result<Spec, SpecError> {
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let sandbox = facts();
    let host_facts = HostFacts::default();
    let inputs = SpecInputs {
        container_id: "c1",
        config,
        sandbox_config: &pod,
        image_config: None,
        image_name: "registry.local/app:1",
        sandbox: &sandbox,
        host: &host_facts,
        target_pid_ns_path: None,
        recursive_read_only: false,
        rootfs_path: None,
    };
    generate(
        &inputs,
        &FakeHost::default(),
        &FakeRootfs::new(Some(PASSWD), Some(GROUP)),
    )
}

/// A clear rejection: what the kubelet sees as InvalidArgument or
/// FailedPrecondition, with a message.
fn clear(e: &SpecError) -> bool {
    match e {
        SpecError::InvalidArgument(m) | SpecError::FailedPrecondition(m) => !m.is_empty(),
        SpecError::Unsupported(_) => true,
        SpecError::Io { .. } => false,
    }
}

fn base() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into()],
        ..Default::default()
    }
}

/// Strings a hostile client sends: paths with `..`, NULs, unicode, long runs.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/.]{0,24}",
        "/[a-z]{1,8}(/\\.\\.)?(/[a-z]{1,8})?",
        any::<String>(),
        Just(String::from("../../../etc/shadow")),
        Just(String::from("/\0/x")),
        (0usize..300_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn mount() -> impl Strategy<Value = CriMount> {
    (
        hostile(),
        hostile(),
        any::<bool>(),
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(
            |(container_path, host_path, readonly, propagation, selinux_relabel)| CriMount {
                container_path,
                host_path,
                readonly,
                propagation,
                selinux_relabel,
                ..Default::default()
            },
        )
}

fn config() -> impl Strategy<Value = ContainerConfig> {
    (
        prop::collection::vec(hostile(), 0..3),
        prop::collection::vec(hostile(), 0..3),
        prop::collection::vec((hostile(), hostile()), 0..4),
        prop::collection::vec(mount(), 0..4),
        prop::collection::vec((hostile(), hostile(), "[rwm]{0,4}"), 0..2),
        hostile(),
        (any::<bool>(), any::<bool>(), any::<i32>(), any::<i32>()),
        (
            proptest::option::of(any::<i64>()),
            hostile(),
            prop::collection::vec(hostile(), 0..3),
        ),
    )
        .prop_map(
            |(command, args, envs, mounts, devices, working_dir, flags, user)| {
                let (privileged, tty, pid_mode, ipc_mode) = flags;
                let (uid, username, caps) = user;
                ContainerConfig {
                    command,
                    args,
                    envs: envs
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value })
                        .collect(),
                    mounts,
                    devices: devices
                        .into_iter()
                        .map(|(container_path, host_path, permissions)| Device {
                            container_path,
                            host_path,
                            permissions,
                        })
                        .collect(),
                    working_dir,
                    tty,
                    linux: Some(LinuxContainerConfig {
                        resources: None,
                        security_context: Some(LinuxContainerSecurityContext {
                            privileged,
                            run_as_user: uid.map(|value| crid_proto::cri::Int64Value { value }),
                            run_as_username: username,
                            capabilities: Some(Capability {
                                add_capabilities: caps,
                                ..Default::default()
                            }),
                            namespace_options: Some(NamespaceOption {
                                pid: pid_mode,
                                ipc: ipc_mode,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }),
                    ..base()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn generate_never_panics_and_rejects_clearly(c in config()) {
        if let Err(e) = gen(&c) {
            prop_assert!(clear(&e), "unclear rejection: {e:?}");
        }
    }

    #[test]
    fn log_paths_never_leave_the_log_directory(dir in hostile(), path in hostile()) {
        if let Ok(Some(p)) = validate::log_path(&dir, &path) {
            prop_assert!(p.starts_with(&dir));
            prop_assert!(!p.components().any(|c| c == std::path::Component::ParentDir));
        }
    }
}

fn invalid(c: &ContainerConfig) -> String {
    match gen(c) {
        Err(SpecError::InvalidArgument(m)) => m,
        other => panic!("not InvalidArgument: {other:?}"),
    }
}

#[test]
fn a_huge_environment_is_invalid_argument() {
    let mut one = base();
    one.envs = vec![KeyValue {
        key: "BIG".into(),
        value: "x".repeat(200 * 1024),
    }];
    assert!(invalid(&one).contains("kernel's limit"));
    let mut many = base();
    many.envs = (0..20_000)
        .map(|i| KeyValue {
            key: format!("K{i}"),
            value: "v".repeat(100),
        })
        .collect();
    assert!(invalid(&many).contains("total"));
    let mut nul = base();
    nul.envs = vec![KeyValue {
        key: "A".into(),
        value: "a\0b".into(),
    }];
    assert!(invalid(&nul).contains("NUL"));
    let mut eq = base();
    eq.envs = vec![KeyValue {
        key: "A=B".into(),
        value: "c".into(),
    }];
    assert!(invalid(&eq).contains("\"=\""));
}

#[test]
fn ten_thousand_mounts_are_invalid_argument() {
    let mut c = base();
    c.mounts = (0..10_000)
        .map(|i| CriMount {
            container_path: format!("/m/{i}"),
            host_path: format!("/srv/{i}"),
            ..Default::default()
        })
        .collect();
    assert!(invalid(&c).contains(&MAX_MOUNTS.to_string()));
}

#[test]
fn dotdot_in_mounts_is_invalid_argument() {
    for (container_path, host_path) in [("/a/../etc", "/srv/x"), ("/data", "/srv/../etc")] {
        let mut c = base();
        c.mounts = vec![CriMount {
            container_path: container_path.into(),
            host_path: host_path.into(),
            ..Default::default()
        }];
        assert!(invalid(&c).contains(".."), "{container_path} {host_path}");
    }
}

#[test]
fn log_path_traversal_is_invalid_argument() {
    for p in [
        "../x.log",
        "a/../../x.log",
        "/etc/passwd",
        "a/",
        ".",
        "x\0.log",
    ] {
        match validate::log_path("/var/log/pods/ns_pod_uid", p) {
            Err(SpecError::InvalidArgument(_)) => {}
            other => panic!("{p:?}: {other:?}"),
        }
    }
    assert!(validate::log_path("/var/log/../etc", "x.log").is_err());
}

#[test]
fn oversized_labels_are_invalid_argument() {
    let mut c = base();
    c.labels = [("k".to_string(), "v".repeat(300 * 1024))].into();
    assert!(invalid(&c).contains("labels and annotations"));
}
