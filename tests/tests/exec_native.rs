//! ExecSync's native start (crid-exec, the default handler) against
//! `runc exec` (the `runc-v2` handler: containerd's runc shim): the same
//! container config in both, and what the exec'd process sees must be the
//! same: credentials, capabilities, no_new_privs, seccomp (mode, filter
//! count, a refused syscall's errno), signal state, rlimits, environment,
//! cwd, umask, and the container's namespaces and cgroups.

use crid_e2e::images::Entry;
use crid_e2e::pods::{sh, Node};
use crid_proto::cri;
use crid_proto::cri::security_profile::ProfileType;

const STATUS_FIELDS: [&str; 13] = [
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
    "SigIgn",
    "SigBlk",
];

async fn exec(n: &mut Node, ctr: &str, cmd: &[&str]) -> (i32, String, String) {
    let r =
        n.c.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: ctr.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 20,
            })
            .await
            .unwrap()
            .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Everything compared, one entry per observation.
async fn observe(n: &mut Node, ctr: &str, root: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (_, status, _) = exec(n, ctr, &["cat", "/proc/self/status"]).await;
    for f in STATUS_FIELDS {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{f}:")))
            .unwrap_or_else(|| panic!("no {f} in {status}"));
        out.push((
            f.to_string(),
            line.split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    let (_, limits, _) = exec(n, ctr, &["cat", "/proc/self/limits"]).await;
    out.push(("limits".into(), limits));
    let (_, env, _) = exec(n, ctr, &["env"]).await;
    // The hostname is the pod's, different in the two pods.
    let env: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with("HOSTNAME="))
        .collect();
    out.push(("env".into(), env.join("\n")));
    out.push(("cwd".into(), exec(n, ctr, &["pwd"]).await.1));
    out.push(("umask".into(), exec(n, ctr, &["sh", "-c", "umask"]).await.1));
    out.push(("probe".into(), exec(n, ctr, &["seccomp-probe"]).await.1));
    let (mine, init) = (
        exec(n, ctr, &["cat", "/proc/self/cgroup"]).await.1,
        exec(n, ctr, &["cat", "/proc/1/cgroup"]).await.1,
    );
    out.push(("cgroup is the init's".into(), (mine == init).to_string()));
    if root {
        // /proc/1/ns needs ptrace access: root only.
        for ns in ["ipc", "uts", "net", "pid", "mnt", "cgroup", "user"] {
            let me = exec(n, ctr, &["readlink", &format!("/proc/self/ns/{ns}")])
                .await
                .1;
            let init = exec(n, ctr, &["readlink", &format!("/proc/1/ns/{ns}")])
                .await
                .1;
            assert!(!me.is_empty(), "{ns}");
            out.push((format!("{ns} ns is the init's"), (me == init).to_string()));
        }
    }
    // A missing binary: the same code and runc's message.
    let (code, _, err) = exec(n, ctr, &["/no/such/binary"]).await;
    out.push(("missing code".into(), code.to_string()));
    let (code, _, _) = exec(n, ctr, &["nosuchcmd"]).await;
    out.push(("missing in PATH code".into(), code.to_string()));
    assert!(err.contains("/no/such/binary"), "{err}");
    out
}

fn config(name: &str, image: &str, root: bool) -> cri::ContainerConfig {
    let mut c = sh(name, image, "exec sleep 3600");
    c.working_dir = "/tmp".into();
    c.envs = vec![
        cri::KeyValue {
            key: "A".into(),
            value: "1".into(),
        },
        cri::KeyValue {
            key: "B".into(),
            value: "2".into(),
        },
    ];
    let mut sc = cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    if !root {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 1000 });
        sc.supplemental_groups = vec![5, 7];
        sc.no_new_privs = true;
        sc.capabilities = Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        });
    }
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn native_exec_sees_what_runc_exec_sees() {
    let mut n = Node::start(vec![Entry::exe(
        "/bin/seccomp-probe",
        crid_e2e::seccomp_probe_binary(),
    )])
    .await;
    let native_cfg = n.pod_config("ex-native");
    let native = n.run_pod(&native_cfg).await;
    let runc_cfg = n.pod_config("ex-runc");
    let runc = n.run_pod_with(&runc_cfg, "runc-v2").await;
    for root in [true, false] {
        let name = if root { "root" } else { "user" };
        let a = n
            .run(&native, &native_cfg, config(name, &n.image, root))
            .await;
        let b = n.run(&runc, &runc_cfg, config(name, &n.image, root)).await;
        let got_native = observe(&mut n, &a, root).await;
        let got_runc = observe(&mut n, &b, root).await;
        for (x, y) in got_native.iter().zip(&got_runc) {
            assert_eq!(x, y, "{name}: native vs runc exec");
        }
        assert_eq!(got_native.len(), got_runc.len());
        // Not vacuous: the process was confined.
        let seccomp = got_native.iter().find(|(k, _)| k == "Seccomp").unwrap();
        assert_eq!(seccomp.1, "2", "{name}");
        if !root {
            let uid = got_native.iter().find(|(k, _)| k == "Uid").unwrap();
            assert_eq!(uid.1, "1000 1000 1000 1000");
        }
    }
    n.stop_remove_pod(&native).await;
    n.stop_remove_pod(&runc).await;
}
