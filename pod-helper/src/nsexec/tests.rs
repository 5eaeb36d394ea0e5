use super::*;

struct FakeFiles(Vec<(&'static str, Result<bool, i32>)>);

impl Files for FakeFiles {
    fn executable(&self, path: &str) -> Result<bool, i32> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, r)| *r)
            .unwrap_or(Err(libc::ENOENT))
    }
}

#[test]
fn look_path_matches_gos_results_and_words() {
    let fs = FakeFiles(vec![
        ("/usr/bin/ls", Ok(true)),
        ("/bin/dir", Ok(false)),
        ("rel", Ok(true)),
    ]);
    let path = Some("/usr/local/bin:/usr/bin/");
    assert_eq!(look_path("ls", path, &fs).unwrap(), "/usr/bin/ls");
    assert_eq!(
        look_path("nope", path, &fs).unwrap_err(),
        "exec: \"nope\": executable file not found in $PATH"
    );
    assert_eq!(
        look_path("/no/such/binary", path, &fs).unwrap_err(),
        "exec: \"/no/such/binary\": stat /no/such/binary: no such file or directory"
    );
    assert_eq!(
        look_path("/bin/dir", path, &fs).unwrap_err(),
        "exec: \"/bin/dir\": permission denied"
    );
    // No PATH: nothing is searched.
    assert!(look_path("ls", None, &fs).is_err());
    // An empty element is ".": found, but relative, so refused.
    assert!(look_path("rel", Some(":/usr/bin"), &fs)
        .unwrap_err()
        .contains("relative to current directory"));
}

#[test]
fn environment_keeps_first_place_and_last_value() {
    let env: Vec<String> = ["A=1", "B=2", "A=3", "C="]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        environment(&env).unwrap(),
        vec![
            ("A".to_string(), "3".to_string()),
            ("B".to_string(), "2".to_string()),
            ("C".to_string(), String::new())
        ]
    );
    assert!(environment(&["NOEQ".to_string()]).is_err());
    assert!(environment(&["=x".to_string()]).is_err());
}

#[test]
fn home_and_groups_as_runc_sets_them() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    assert_eq!(home_of(Some(passwd), 0), "/root");
    assert_eq!(home_of(Some(passwd), 1000), "/");
    assert_eq!(home_of(None, 0), "/");
    assert_eq!(groups(&[5, 3, 5]), vec![5, 3]);
}

#[test]
fn namespaces_are_joined_user_first_mount_after_pid() {
    assert_eq!(NAMESPACES[0], "user");
    let at = |n| NAMESPACES.iter().position(|x| *x == n).unwrap();
    assert!(at("pid") < at("mnt") && at("net") < at("mnt") && at("mnt") < at("cgroup"));
}

#[test]
fn cgroup_paths_for_a_hybrid_host() {
    let mi = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
    let cg = "4:memory:/pod/c1\n3:cpuacct,cpu:/pod/c1\n1:name=systemd:/pod/c1\n0::/pod\n";
    assert_eq!(
        cgroup_procs(cg, mi),
        vec![
            "/sys/fs/cgroup/memory/pod/c1/cgroup.procs",
            "/sys/fs/cgroup/cpu,cpuacct/pod/c1/cgroup.procs",
            "/sys/fs/cgroup/systemd/pod/c1/cgroup.procs",
            "/sys/fs/cgroup/unified/pod/cgroup.procs",
        ]
    );
    // Pure v2.
    let mi2 = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup_procs("0::/a/b\n", mi2),
        vec!["/sys/fs/cgroup/a/b/cgroup.procs"]
    );
}

#[test]
fn seccomp_actions_and_conditions_as_runc() {
    use seccomp::{action, condition_groups, Action, Arg};
    assert_eq!(
        action("SCMP_ACT_ERRNO", None).unwrap(),
        Action::Errno(libc::EPERM)
    );
    assert_eq!(
        action("SCMP_ACT_ERRNO", Some(38)).unwrap(),
        Action::Errno(38)
    );
    assert_eq!(action("SCMP_ACT_KILL", None).unwrap(), Action::KillThread);
    assert!(action("SCMP_ACT_BOGUS", None).is_err());
    let arg = |index| Arg {
        index,
        value: 1,
        value_two: 0,
        op: "SCMP_CMP_EQ".into(),
    };
    assert_eq!(condition_groups(&[arg(0), arg(1)]), vec![vec![0, 1]]);
    assert_eq!(condition_groups(&[arg(0), arg(0)]), vec![vec![0], vec![1]]);
}

#[test]
fn seccomp_profile_compiles_and_skips_unknown_names() {
    let p: seccomp::Profile = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "syscalls":[{"names":["getpid","no_such_syscall"],"action":"SCMP_ACT_ALLOW"},
                        {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                         "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                        {"names":["read"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    assert!(seccomp::compile(&p).is_ok());
    let notify: seccomp::Profile = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    )
    .unwrap();
    assert!(seccomp::unsupported(&notify).is_some());
}

#[test]
fn capability_names_are_filtered_to_known_supported_ones() {
    let supported: caps::CapsHashSet = [caps::Capability::CAP_CHOWN].into_iter().collect();
    let names = vec![
        "CAP_CHOWN".to_string(),
        "CAP_BOGUS".to_string(),
        "CAP_SYS_ADMIN".to_string(),
    ];
    assert_eq!(cap_set(&names, &supported), supported);
}

#[test]
fn terminal_and_selinux_fall_back() {
    let mut p = Process {
        terminal: true,
        ..Default::default()
    };
    assert!(unsupported(&p, &Config::default()).is_some());
    p.terminal = false;
    assert!(unsupported(&p, &Config::default()).is_none());
    p.selinux_label = "x".into();
    assert!(unsupported(&p, &Config::default()).is_some());
}
