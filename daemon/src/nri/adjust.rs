//! Applies plugins' CreateContainer adjustments to the container's OCI spec
//! (as JSON, so every field NRI may touch is reachable without a builder).
//! NRI's removal marker: a key, mount destination or device path prefixed
//! with `-` removes that entry.

use crid_proto::nri;
use serde_json::{json, Map, Value};

/// What a plugin asked for that crid cannot apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid NRI adjustment: {0}")]
pub struct AdjustError(pub String);

fn removal(key: &str) -> Option<&str> {
    key.strip_prefix('-')
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    // Just made an object when it was not one.
    match v[key].as_object_mut() {
        Some(m) => m,
        None => unreachable!("set to an object above"),
    }
}

fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v[key].is_array() {
        v[key] = json!([]);
    }
    match v[key].as_array_mut() {
        Some(a) => a,
        None => unreachable!("set to an array above"),
    }
}

/// Applies `adj` to `spec`. `own_oom_score_adj`: the lowest oom_score_adj
/// crid may set (lower requests are raised to it, as for CRI requests).
pub fn apply(
    spec: &mut Value,
    adj: &nri::ContainerAdjustment,
    own_oom_score_adj: Option<i32>,
) -> Result<(), AdjustError> {
    if !spec.is_object() {
        return Err(AdjustError("the spec is not an object".into()));
    }
    // Annotations.
    {
        let a = obj(spec, "annotations");
        for (k, v) in &adj.annotations {
            match removal(k) {
                Some(k) => {
                    a.remove(k);
                }
                None => {
                    a.insert(k.clone(), json!(v));
                }
            }
        }
    }
    // Mounts: a new mount replaces one at the same destination.
    {
        let mounts = arr(spec, "mounts");
        for m in &adj.mounts {
            if let Some(dest) = removal(&m.destination) {
                mounts.retain(|x| x["destination"] != json!(dest));
                continue;
            }
            if !m.destination.starts_with('/') {
                return Err(AdjustError(format!(
                    "mount destination {:?} is not absolute",
                    m.destination
                )));
            }
            mounts.retain(|x| x["destination"] != json!(m.destination));
            mounts.push(json!({
                "destination": m.destination,
                "type": m.r#type,
                "source": m.source,
                "options": m.options,
            }));
        }
    }
    let process = obj(spec, "process");
    let mut process_v = Value::Object(std::mem::take(process));
    // Environment: set or remove by name.
    {
        let env = arr(&mut process_v, "env");
        for kv in &adj.env {
            let (name, remove) = match removal(&kv.key) {
                Some(n) => (n, true),
                None => (kv.key.as_str(), false),
            };
            if name.is_empty() || name.contains('=') {
                return Err(AdjustError(format!("bad environment name {:?}", kv.key)));
            }
            let prefix = format!("{name}=");
            env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
            if !remove {
                env.push(json!(format!("{name}={}", kv.value)));
            }
        }
    }
    if !adj.args.is_empty() {
        process_v["args"] = json!(adj.args);
    }
    if !adj.rlimits.is_empty() {
        let rl = arr(&mut process_v, "rlimits");
        for r in &adj.rlimits {
            rl.retain(|x| x["type"] != json!(r.r#type));
            rl.push(json!({"type": r.r#type, "hard": r.hard, "soft": r.soft}));
        }
    }
    if let Some(linux) = &adj.linux {
        if let Some(o) = &linux.oom_score_adj {
            let v = i32::try_from(o.value)
                .map_err(|_| AdjustError(format!("oom_score_adj {} out of range", o.value)))?;
            let v = own_oom_score_adj.map_or(v, |own| v.max(own));
            process_v["oomScoreAdj"] = json!(v);
        }
    }
    *obj(spec, "process") = match process_v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // OCI hooks: appended after the spec's own.
    if let Some(h) = &adj.hooks {
        let hooks = obj(spec, "hooks");
        let lists: [(&str, &Vec<nri::Hook>); 6] = [
            ("prestart", &h.prestart),
            ("createRuntime", &h.create_runtime),
            ("createContainer", &h.create_container),
            ("startContainer", &h.start_container),
            ("poststart", &h.poststart),
            ("poststop", &h.poststop),
        ];
        for (name, list) in lists {
            if list.is_empty() {
                continue;
            }
            let entry = hooks.entry(name).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                for hk in list {
                    let mut v = json!({"path": hk.path});
                    if !hk.args.is_empty() {
                        v["args"] = json!(hk.args);
                    }
                    if !hk.env.is_empty() {
                        v["env"] = json!(hk.env);
                    }
                    if let Some(t) = &hk.timeout {
                        v["timeout"] = json!(t.value);
                    }
                    a.push(v);
                }
            }
        }
    }
    if let Some(linux) = &adj.linux {
        let lx = obj(spec, "linux");
        let mut lx_v = Value::Object(std::mem::take(lx));
        apply_linux(&mut lx_v, linux)?;
        *obj(spec, "linux") = match lx_v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
    }
    Ok(())
}

fn apply_linux(lx: &mut Value, linux: &nri::LinuxContainerAdjustment) -> Result<(), AdjustError> {
    for d in &linux.devices {
        if let Some(path) = removal(&d.path) {
            arr(lx, "devices").retain(|x| x["path"] != json!(path));
            continue;
        }
        if !d.path.starts_with("/dev/") || !matches!(d.r#type.as_str(), "c" | "b" | "u" | "p") {
            return Err(AdjustError(format!(
                "device {:?} of type {:?} is not a device node",
                d.path, d.r#type
            )));
        }
        let mut dev = json!({"path": d.path, "type": d.r#type, "major": d.major, "minor": d.minor});
        if let Some(m) = &d.file_mode {
            dev["fileMode"] = json!(m.value);
        }
        if let Some(u) = &d.uid {
            dev["uid"] = json!(u.value);
        }
        if let Some(g) = &d.gid {
            dev["gid"] = json!(g.value);
        }
        let devices = arr(lx, "devices");
        devices.retain(|x| x["path"] != json!(d.path));
        devices.push(dev);
        // The device cgroup must let the container use it.
        let res = obj(lx, "resources");
        let rules = res.entry("devices").or_insert_with(|| json!([]));
        if let Some(rules) = rules.as_array_mut() {
            rules.push(json!({"allow": true, "type": d.r#type, "major": d.major, "minor": d.minor, "access": "rwm"}));
        }
    }
    if let Some(r) = &linux.resources {
        let mut res = Value::Object(std::mem::take(obj(lx, "resources")));
        apply_resources(&mut res, r);
        lx["resources"] = res;
    }
    if !linux.cgroups_path.is_empty() {
        lx["cgroupsPath"] = json!(linux.cgroups_path);
    }
    if !linux.sysctl.is_empty() {
        let s = obj(lx, "sysctl");
        for (k, v) in &linux.sysctl {
            match removal(k) {
                Some(k) => {
                    s.remove(k);
                }
                None => {
                    s.insert(k.clone(), json!(v));
                }
            }
        }
    }
    Ok(())
}

/// Sets the OCI `linux.resources` fields `r` sets (cpuset and memset
/// included); unset fields keep their value.
pub fn apply_resources(res: &mut Value, r: &nri::LinuxResources) {
    if let Some(m) = &r.memory {
        let mem = obj(res, "memory");
        let set = |mem: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                mem.insert(k.to_string(), v);
            }
        };
        set(mem, "limit", m.limit.as_ref().map(|v| json!(v.value)));
        set(
            mem,
            "reservation",
            m.reservation.as_ref().map(|v| json!(v.value)),
        );
        set(mem, "swap", m.swap.as_ref().map(|v| json!(v.value)));
        set(mem, "kernel", m.kernel.as_ref().map(|v| json!(v.value)));
        set(
            mem,
            "kernelTCP",
            m.kernel_tcp.as_ref().map(|v| json!(v.value)),
        );
        set(
            mem,
            "swappiness",
            m.swappiness.as_ref().map(|v| json!(v.value)),
        );
        set(
            mem,
            "disableOOMKiller",
            m.disable_oom_killer.as_ref().map(|v| json!(v.value)),
        );
        set(
            mem,
            "useHierarchy",
            m.use_hierarchy.as_ref().map(|v| json!(v.value)),
        );
    }
    if let Some(c) = &r.cpu {
        let cpu = obj(res, "cpu");
        if let Some(v) = &c.shares {
            cpu.insert("shares".into(), json!(v.value));
        }
        if let Some(v) = &c.quota {
            cpu.insert("quota".into(), json!(v.value));
        }
        if let Some(v) = &c.period {
            cpu.insert("period".into(), json!(v.value));
        }
        if let Some(v) = &c.realtime_runtime {
            cpu.insert("realtimeRuntime".into(), json!(v.value));
        }
        if let Some(v) = &c.realtime_period {
            cpu.insert("realtimePeriod".into(), json!(v.value));
        }
        if !c.cpus.is_empty() {
            cpu.insert("cpus".into(), json!(c.cpus));
        }
        if !c.mems.is_empty() {
            cpu.insert("mems".into(), json!(c.mems));
        }
    }
    if let Some(p) = &r.pids {
        res["pids"] = json!({"limit": p.limit});
    }
    if !r.hugepage_limits.is_empty() {
        let h = arr(res, "hugepageLimits");
        for l in &r.hugepage_limits {
            h.retain(|x| x["pageSize"] != json!(l.page_size));
            h.push(json!({"pageSize": l.page_size, "limit": l.limit}));
        }
    }
    if !r.unified.is_empty() {
        let u = obj(res, "unified");
        for (k, v) in &r.unified {
            u.insert(k.clone(), json!(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "env": ["PATH=/bin", "DROP=1"], "oomScoreAdj": 0,
                        "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/old", "type": "bind", "source": "/x", "options": ["rbind"]}],
            "annotations": {"keep": "1", "gone": "2"},
            "linux": {"resources": {"memory": {"limit": 100}, "cpu": {"shares": 2}}}
        })
    }

    #[test]
    fn env_mounts_and_annotations_are_set_and_removed() {
        let mut spec = base();
        let adj = nri::ContainerAdjustment {
            annotations: [
                ("new".to_string(), "v".to_string()),
                ("-gone".to_string(), String::new()),
            ]
            .into_iter()
            .collect(),
            mounts: vec![
                nri::Mount {
                    destination: "/data".into(),
                    r#type: "bind".into(),
                    source: "/srv".into(),
                    options: vec!["rbind".into(), "ro".into()],
                },
                nri::Mount {
                    destination: "-/old".into(),
                    ..Default::default()
                },
            ],
            env: vec![
                nri::KeyValue {
                    key: "INJECTED".into(),
                    value: "yes".into(),
                },
                nri::KeyValue {
                    key: "-DROP".into(),
                    value: String::new(),
                },
                nri::KeyValue {
                    key: "PATH".into(),
                    value: "/usr/bin".into(),
                },
            ],
            ..Default::default()
        };
        apply(&mut spec, &adj, None).unwrap();
        assert_eq!(
            spec["process"]["env"],
            json!(["INJECTED=yes", "PATH=/usr/bin"])
        );
        assert_eq!(spec["annotations"], json!({"keep": "1", "new": "v"}));
        let dests: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(dests, vec!["/proc", "/data"]);
        assert_eq!(spec["mounts"][1]["options"], json!(["rbind", "ro"]));
        // Untouched parts stay.
        assert_eq!(spec["process"]["args"], json!(["sh"]));
    }

    #[test]
    fn linux_resources_devices_rlimits_hooks_and_oom_score() {
        let mut spec = base();
        let adj = nri::ContainerAdjustment {
            rlimits: vec![nri::PosixRlimit {
                r#type: "RLIMIT_NOFILE".into(),
                hard: 64,
                soft: 32,
            }],
            hooks: Some(nri::Hooks {
                prestart: vec![nri::Hook {
                    path: "/bin/true".into(),
                    timeout: Some(nri::OptionalInt { value: 5 }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            linux: Some(nri::LinuxContainerAdjustment {
                devices: vec![nri::LinuxDevice {
                    path: "/dev/nri-null".into(),
                    r#type: "c".into(),
                    major: 1,
                    minor: 3,
                    file_mode: Some(nri::OptionalFileMode { value: 0o666 }),
                    ..Default::default()
                }],
                resources: Some(nri::LinuxResources {
                    cpu: Some(nri::LinuxCpu {
                        cpus: "0".into(),
                        mems: "0".into(),
                        quota: Some(nri::OptionalInt64 { value: 20000 }),
                        ..Default::default()
                    }),
                    memory: Some(nri::LinuxMemory {
                        limit: Some(nri::OptionalInt64 { value: 4096 }),
                        ..Default::default()
                    }),
                    pids: Some(nri::LinuxPids { limit: 7 }),
                    ..Default::default()
                }),
                oom_score_adj: Some(nri::OptionalInt { value: -500 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(&mut spec, &adj, Some(-100)).unwrap();
        let res = &spec["linux"]["resources"];
        assert_eq!(
            res["cpu"],
            json!({"shares": 2, "quota": 20000, "cpus": "0", "mems": "0"})
        );
        assert_eq!(res["memory"]["limit"], json!(4096));
        assert_eq!(res["pids"]["limit"], json!(7));
        assert_eq!(
            res["devices"],
            json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])
        );
        assert_eq!(spec["linux"]["devices"][0]["path"], json!("/dev/nri-null"));
        assert_eq!(spec["linux"]["devices"][0]["fileMode"], json!(0o666));
        assert_eq!(
            spec["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 64, "soft": 32}])
        );
        assert_eq!(
            spec["hooks"]["prestart"],
            json!([{"path": "/bin/true", "timeout": 5}])
        );
        // Raised to crid's own floor, as CRI requests are.
        assert_eq!(spec["process"]["oomScoreAdj"], json!(-100));
        // The result is still a valid OCI spec.
        serde_json::from_value::<oci_spec::runtime::Spec>(spec).unwrap();
    }

    #[test]
    fn bad_adjustments_are_refused() {
        let mut spec = base();
        let rel = nri::ContainerAdjustment {
            mounts: vec![nri::Mount {
                destination: "rel".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(apply(&mut spec, &rel, None).is_err());
        let env = nri::ContainerAdjustment {
            env: vec![nri::KeyValue {
                key: "A=B".into(),
                value: "c".into(),
            }],
            ..Default::default()
        };
        assert!(apply(&mut spec, &env, None).is_err());
        let dev = nri::ContainerAdjustment {
            linux: Some(nri::LinuxContainerAdjustment {
                devices: vec![nri::LinuxDevice {
                    path: "/etc/passwd".into(),
                    r#type: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(apply(&mut spec, &dev, None).is_err());
    }
}
