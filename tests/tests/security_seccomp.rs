//! Seccomp and AppArmor (issue 11), observed inside real runc containers:
//! what `/proc/self/status` says and which syscalls fail with which errno
//! under RuntimeDefault, Unconfined, no profile, a Localhost profile on the
//! node, and for privileged containers; bad requests refused with nothing
//! left behind; AppArmor requests on this node (no AppArmor in the kernel).
//!
//! The syscalls are made by `seccomp-probe` (tests/tests/seccomp_probe.c),
//! compiled static at test time and added to the busybox image: busybox has
//! no applet for keyctl, clone3 or an AF_VSOCK socket.

use crid_e2e::images::Entry;
use crid_e2e::pods::{parse_cri_log, sh, wait_log_contains, Node};
use crid_proto::cri;
use crid_proto::cri::security_profile::ProfileType;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

const EXIT_WAIT: Duration = Duration::from_secs(30);

/// A node whose image has /bin/seccomp-probe.
async fn node() -> Node {
    Node::start(vec![Entry::exe(
        "/bin/seccomp-probe",
        crid_e2e::seccomp_probe_binary(),
    )])
    .await
}

fn profile(t: ProfileType, localhost_ref: &str) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.into(),
    })
}

/// `sh -c script` with this security context.
fn with_sc(
    name: &str,
    image: &str,
    script: &str,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    let mut c = sh(name, image, script);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

fn seccomp(t: ProfileType, r: &str) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        seccomp: profile(t, r),
        ..Default::default()
    }
}

fn add_caps(
    mut sc: cri::LinuxContainerSecurityContext,
    caps: &[&str],
) -> cri::LinuxContainerSecurityContext {
    sc.capabilities = Some(cri::Capability {
        add_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    });
    sc
}

/// What every probing container runs: its seccomp mode, the probe, a marker.
const PROBE: &str = "grep '^Seccomp:' /proc/self/status; seccomp-probe; echo END";

/// A running pod of these tests.
struct Pod {
    id: String,
    name: String,
    cfg: cri::PodSandboxConfig,
}

impl Pod {
    async fn run(n: &mut Node, cfg: cri::PodSandboxConfig) -> Pod {
        let name = cfg.metadata.clone().unwrap_or_default().name;
        let id = n.run_pod(&cfg).await;
        Pod { id, name, cfg }
    }

    /// Runs `sh -c script` with `sc` to its exit (code 0 expected) and
    /// returns its stdout lines as `key=value` pairs (`Seccomp:\t2` becomes
    /// `Seccomp=2`), plus the raw lines joined under the key "".
    async fn probe(
        &self,
        n: &mut Node,
        name: &str,
        script: &str,
        sc: cri::LinuxContainerSecurityContext,
    ) -> HashMap<String, String> {
        let cfg = with_sc(name, &n.image.clone(), script, sc);
        let id = n.run(&self.id, &self.cfg, cfg).await;
        let s = n.wait_exited(&id, EXIT_WAIT).await;
        let log_path = n.log_dir(&self.name).join(format!("{name}.log"));
        wait_log_contains(&log_path, "END", Duration::from_secs(5)).await;
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(s.exit_code, 0, "{name}: {log}");
        let mut out = HashMap::new();
        let mut raw = Vec::new();
        for (_, _, line) in parse_cri_log(&log) {
            if let Some(mode) = line.strip_prefix("Seccomp:") {
                out.insert("Seccomp".to_string(), mode.trim().to_string());
            } else if let Some((k, v)) = line.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
            raw.push(line);
        }
        out.insert(String::new(), raw.join("\n"));
        out
    }

    /// CreateContainer of `sh -c true` with `sc`, expected to fail.
    async fn refused(&self, n: &mut Node, sc: cri::LinuxContainerSecurityContext) -> tonic::Status {
        let cfg = with_sc("refused", &n.image.clone(), "true", sc);
        n.create(&self.id, &self.cfg, cfg).await.unwrap_err()
    }
}

/// Asserts `got[key] == want` for each pair, showing the whole output on failure.
fn expect(got: &HashMap<String, String>, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(
            got.get(*k).map(String::as_str),
            Some(*v),
            "{k} in:\n{}",
            got[""]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_default_filters_syscalls_and_unconfined_does_not() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("sc-default");
    let pod = Pod::run(&mut n, pod_cfg).await;

    // RuntimeDefault: mode 2 (filter); namespaces, keys, AF_VSOCK and odd
    // personalities refused with EPERM, clone3 with ENOSYS; the rest works.
    let confined = [
        ("Seccomp", "2"),
        ("keyctl", "EPERM"),
        ("unshare_user", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone_plain", "ok"),
        ("clone3", "ENOSYS"),
        ("personality_query", "ok"),
        ("personality_bsd", "EPERM"),
        ("socket_unix", "ok"),
        ("socket_vsock", "EPERM"),
        ("mkdir", "ok"),
    ];
    let default = seccomp(ProfileType::RuntimeDefault, "");
    let got = pod.probe(&mut n, "default", PROBE, default.clone()).await;
    expect(&got, &confined);

    // The deprecated string selects the same profile.
    #[allow(deprecated)]
    let old = cri::LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    };
    let got = pod.probe(&mut n, "old", PROBE, old).await;
    expect(&got, &confined);

    // With CAP_SYS_ADMIN the profile allows namespaces and clone3 (the
    // kernel's own answer to clone3(NULL, 0) is EINVAL).
    let admin = add_caps(default, &["SYS_ADMIN"]);
    let got = pod.probe(&mut n, "admin", PROBE, admin).await;
    expect(
        &got,
        &[
            ("Seccomp", "2"),
            ("unshare_user", "ok"),
            ("clone_newuser", "ok"),
            ("clone3", "EINVAL"),
            ("keyctl", "EPERM"),
            ("socket_vsock", "EPERM"),
        ],
    );

    // Unconfined and no profile at all: no filter; the kernel decides.
    for (name, sc) in [
        ("unconfined", seccomp(ProfileType::Unconfined, "")),
        ("unset", Default::default()),
    ] {
        let got = pod.probe(&mut n, name, PROBE, sc).await;
        expect(
            &got,
            &[
                ("Seccomp", "0"),
                ("clone3", "EINVAL"),
                ("personality_bsd", "ok"),
                ("clone_plain", "ok"),
            ],
        );
        for call in ["keyctl", "socket_vsock", "unshare_user", "clone_newuser"] {
            let v = got.get(call).map(String::as_str);
            assert_ne!(v, Some("EPERM"), "{name} {call}: {}", got[""]);
        }
    }

    // kubectl exec runs under the container's filter too (runc applies the
    // container's profile to exec processes).
    let sleeper = with_sc(
        "sleeper",
        &n.image.clone(),
        "exec sleep 300",
        seccomp(ProfileType::RuntimeDefault, ""),
    );
    let id = n.run(&pod.id, &pod.cfg, sleeper).await;
    let r =
        n.c.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id,
                cmd: [
                    "sh",
                    "-c",
                    "grep '^Seccomp:' /proc/self/status; seccomp-probe",
                ]
                .map(String::from)
                .to_vec(),
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.exit_code, 0, "{out}");
    for line in [
        "Seccomp:\t2",
        "keyctl=EPERM",
        "unshare_user=EPERM",
        "clone3=ENOSYS",
        "mkdir=ok",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
    }

    n.stop_remove_pod(&pod.id).await;
    n.assert_no_container_left().await;
}

/// A docker-format profile: everything allowed but mkdir/mkdirat and
/// sethostname (EPERM), and keyctl only for containers holding CAP_NET_ADMIN
/// (an `includes` rule, evaluated per container).
const LOCAL_PROFILE: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["mkdir", "mkdirat", "sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"name": "keyctl", "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "includes": {"caps": ["CAP_NET_ADMIN"]}}
    ]
}"#;

/// Writes `text` as a profile file on the node; returns its absolute path.
fn node_profile(n: &Node, name: &str, text: &str) -> String {
    let p = n.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn localhost_profile_applies_and_privileged_containers_ignore_it() {
    let mut n = node().await;
    let path = node_profile(&n, "block-mkdir.json", LOCAL_PROFILE);
    let mut pod_cfg = n.pod_config("sc-local");
    if let Some(sc) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    let pod = Pod::run(&mut n, pod_cfg).await;
    let script = format!("mkdir /tmp/by-busybox 2>&1 || echo busybox-mkdir=failed; {PROBE}");
    let local = seccomp(ProfileType::Localhost, &path);

    // The node's profile: mkdir refused, keyctl allowed (no CAP_NET_ADMIN),
    // everything else allowed (clone3 reaches the kernel: EINVAL).
    let got = pod.probe(&mut n, "local", &script, local.clone()).await;
    expect(
        &got,
        &[
            ("Seccomp", "2"),
            ("busybox-mkdir", "failed"),
            ("mkdir", "EPERM"),
            ("keyctl", "ok"),
            ("clone3", "EINVAL"),
            ("personality_bsd", "ok"),
        ],
    );
    assert!(got[""].contains("Operation not permitted"), "{}", got[""]);

    // The same file for a container with CAP_NET_ADMIN: its keyctl rule applies.
    let netadmin = add_caps(local.clone(), &["NET_ADMIN"]);
    let got = pod.probe(&mut n, "local-netadmin", &script, netadmin).await;
    expect(
        &got,
        &[("Seccomp", "2"), ("mkdir", "EPERM"), ("keyctl", "EPERM")],
    );

    // The deprecated `localhost/<path>` string.
    #[allow(deprecated)]
    let old = cri::LinuxContainerSecurityContext {
        seccomp_profile_path: format!("localhost/{path}"),
        ..Default::default()
    };
    let got = pod.probe(&mut n, "local-old", &script, old).await;
    expect(&got, &[("Seccomp", "2"), ("mkdir", "EPERM")]);

    // RuntimeDefault allows mkdir.
    let default = seccomp(ProfileType::RuntimeDefault, "");
    let got = pod.probe(&mut n, "default", &script, default).await;
    expect(&got, &[("Seccomp", "2"), ("mkdir", "ok")]);
    assert!(!got.contains_key("busybox-mkdir"), "{}", got[""]);

    // sethostname: refused by the profile even with CAP_SYS_ADMIN (in a UTS
    // namespace of its own, so the node's hostname is never touched) ...
    let hostname = format!("unshare -u hostname sc-test 2>&1 || echo hostname=failed; {PROBE}");
    let admin = add_caps(local, &["SYS_ADMIN"]);
    let got = pod.probe(&mut n, "local-admin", &hostname, admin).await;
    expect(&got, &[("Seccomp", "2"), ("hostname", "failed")]);

    // ... but a privileged container runs without the profile (CRI:
    // "Seccomp restrictions are not applied"), even a missing one.
    let hostname = format!("unshare -u hostname sc-test && echo hostname=ok; {PROBE}");
    for (name, r) in [
        ("privileged", path.as_str()),
        ("privileged-missing", "/nonexistent/profile.json"),
    ] {
        let mut sc = seccomp(ProfileType::Localhost, r);
        sc.privileged = true;
        let got = pod.probe(&mut n, name, &hostname, sc).await;
        let want = [
            ("Seccomp", "0"),
            ("hostname", "ok"),
            ("mkdir", "ok"),
            ("keyctl", "ok"),
        ];
        expect(&got, &want);
    }

    n.stop_remove_pod(&pod.id).await;
    n.assert_no_container_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_seccomp_requests_are_refused_and_leave_nothing() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("sc-bad");
    let pod = Pod::run(&mut n, pod_cfg).await;
    let missing = n
        .dir
        .path()
        .join("no-such-profile.json")
        .display()
        .to_string();
    let garbage = node_profile(&n, "garbage.json", "{ not json");
    let bad_action = node_profile(
        &n,
        "bad-action.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_DENY"}]}"#,
    );

    #[allow(deprecated)]
    let cases: Vec<(cri::LinuxContainerSecurityContext, &str)> = vec![
        (seccomp(ProfileType::Localhost, &missing), missing.as_str()),
        (seccomp(ProfileType::Localhost, &garbage), garbage.as_str()),
        (
            seccomp(ProfileType::Localhost, &bad_action),
            "SCMP_ACT_DENY",
        ),
        (
            seccomp(ProfileType::Localhost, "profiles/relative.json"),
            "not absolute",
        ),
        (seccomp(ProfileType::Localhost, ""), "without localhost_ref"),
        (
            seccomp(ProfileType::RuntimeDefault, &missing),
            "only allowed with type Localhost",
        ),
        (
            cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: 42,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            },
            "unknown seccomp profile type 42",
        ),
        (
            cri::LinuxContainerSecurityContext {
                seccomp_profile_path: "default".into(),
                ..Default::default()
            },
            "invalid seccomp profile",
        ),
        (
            cri::LinuxContainerSecurityContext {
                seccomp_profile_path: format!("localhost/{missing}"),
                ..Default::default()
            },
            missing.as_str(),
        ),
    ];
    for (sc, want) in cases {
        let err = pod.refused(&mut n, sc.clone()).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{sc:?}: {err:?}");
        assert!(err.message().contains(want), "{want}: {}", err.message());
        n.assert_no_container_left().await;
    }

    // The name was not kept: a good request with it works.
    let good = with_sc(
        "refused",
        &n.image.clone(),
        "true",
        seccomp(ProfileType::RuntimeDefault, ""),
    );
    let id = n.run(&pod.id, &pod.cfg, good).await;
    assert_eq!(n.wait_exited(&id, EXIT_WAIT).await.exit_code, 0);

    n.stop_remove_pod(&pod.id).await;
    n.assert_no_container_left().await;
}

/// Whether this node's kernel has AppArmor enabled (runc's test).
fn node_has_apparmor() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|p| p.starts_with('Y'))
}

#[tokio::test(flavor = "multi_thread")]
async fn apparmor_requests_on_this_node() {
    let mut n = node().await;
    let pod_cfg = n.pod_config("sc-aa");
    let pod = Pod::run(&mut n, pod_cfg).await;
    let apparmor = |t: ProfileType, r: &str| cri::LinuxContainerSecurityContext {
        apparmor: profile(t, r),
        ..Default::default()
    };

    // A named profile the node cannot apply is refused, naming it.
    let (code, why) = if node_has_apparmor() {
        (Code::InvalidArgument, "is not loaded")
    } else {
        (Code::FailedPrecondition, "AppArmor is not enabled")
    };
    #[allow(deprecated)]
    let named = [
        apparmor(ProfileType::Localhost, "crid-test-no-such-profile"),
        cri::LinuxContainerSecurityContext {
            apparmor_profile: "localhost/crid-test-no-such-profile".into(),
            ..Default::default()
        },
    ];
    for sc in named {
        let err = pod.refused(&mut n, sc).await;
        assert_eq!(err.code(), code, "{err:?}");
        let m = err.message();
        assert!(
            m.contains("crid-test-no-such-profile") && m.contains(why),
            "{m}"
        );
        n.assert_no_container_left().await;
    }

    // RuntimeDefault (field or string) and Unconfined run.
    #[allow(deprecated)]
    let runnable = [
        ("aa-default", apparmor(ProfileType::RuntimeDefault, "")),
        ("aa-unconfined", apparmor(ProfileType::Unconfined, "")),
        (
            "aa-old",
            cri::LinuxContainerSecurityContext {
                apparmor_profile: "runtime/default".into(),
                ..Default::default()
            },
        ),
    ];
    for (name, sc) in runnable {
        let got = pod.probe(&mut n, name, "echo END", sc).await;
        assert!(got[""].contains("END"), "{name}");
    }

    n.stop_remove_pod(&pod.id).await;
    n.assert_no_container_left().await;
}
