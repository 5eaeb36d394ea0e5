//! ListMetricDescriptors and ListPodSandboxMetrics: the kubelet's CRI
//! metrics (its `/metrics/cadvisor` when the runtime provides them). The
//! figures are the stats RPCs' (same collectors: [`super::stats`]), named
//! and labelled as cAdvisor does, so dashboards and alerts written for
//! cAdvisor keep working.
//!
//! Labels, in this order on every metric: `id` (the cgroup path), `name`
//! (container id, or sandbox id for pod-level series), `image`,
//! `container` (the container's name; empty for pod-level series), `pod`,
//! `namespace`, then the metric's own (`cpu`, `interface`, `device`,
//! `failure_type`/`scope`). Values are the API's unsigned integers: CPU
//! seconds are whole seconds (the API has no fractions), times are Unix
//! seconds, and a missing figure is left out rather than sent as 0. Network
//! series are pod-level (containers share the pod's network namespace).

use super::Crid;
use crate::container::record::ContainerRecord;
use crate::error::Result;
use crid_proto::cri;
use crid_proto::cri::MetricType;

/// Label keys every metric starts with.
pub const BASE_LABELS: [&str; 6] = ["id", "name", "image", "container", "pod", "namespace"];

/// One metric crid reports.
struct Desc {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Label keys after [`BASE_LABELS`].
    extra: &'static [&'static str],
}

const fn gauge(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Desc {
    Desc {
        name,
        help,
        kind: MetricType::Gauge,
        extra,
    }
}

const fn counter(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Desc {
    Desc {
        name,
        help,
        kind: MetricType::Counter,
        extra,
    }
}

/// Every metric, with cAdvisor's names and help texts.
const DESCRIPTORS: &[Desc] = &[
    counter(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        &["cpu"],
    ),
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
    ),
    gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
    ),
    gauge("container_memory_rss", "Size of RSS in bytes.", &[]),
    gauge(
        "container_memory_swap",
        "Container swap usage in bytes.",
        &[],
    ),
    counter(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
    ),
    gauge(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
    ),
    gauge(
        "container_spec_cpu_period",
        "CPU period of the container.",
        &[],
    ),
    gauge(
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        &[],
    ),
    gauge(
        "container_spec_cpu_shares",
        "CPU share of the container.",
        &[],
    ),
    gauge(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        &["device"],
    ),
    gauge(
        "container_fs_inodes_used",
        "Number of inodes used by the container on this filesystem.",
        &["device"],
    ),
    gauge(
        "container_processes",
        "Number of processes running inside the container.",
        &[],
    ),
    gauge(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
    ),
    counter(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        &[],
    ),
    counter(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        &["interface"],
    ),
    counter(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        &["interface"],
    ),
    counter(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        &["interface"],
    ),
    counter(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        &["interface"],
    ),
];

fn desc(name: &str) -> Option<&'static Desc> {
    DESCRIPTORS.iter().find(|d| d.name == name)
}

/// `ListMetricDescriptors`.
pub fn list_metric_descriptors() -> cri::ListMetricDescriptorsResponse {
    cri::ListMetricDescriptorsResponse {
        descriptors: DESCRIPTORS
            .iter()
            .map(|d| cri::MetricDescriptor {
                name: d.name.to_string(),
                help: d.help.to_string(),
                label_keys: BASE_LABELS
                    .iter()
                    .chain(d.extra)
                    .map(|k| k.to_string())
                    .collect(),
            })
            .collect(),
    }
}

/// Values of [`BASE_LABELS`] for one container or pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The cgroup path.
    pub id: String,
    /// Container id, or sandbox id for the pod itself.
    pub name: String,
    /// The image as the kubelet named it ("" for the pod).
    pub image: String,
    /// The container's name ("" for the pod).
    pub container: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
}

/// Collects the metrics of one owner.
struct Series<'a> {
    owner: &'a Owner,
    out: Vec<cri::Metric>,
}

impl Series<'_> {
    /// Adds metric `name` with `extra` label values; skipped if `value` is
    /// unknown. A name without a descriptor is a bug caught by the tests.
    fn push(&mut self, name: &'static str, extra: &[&str], value: Option<u64>) {
        let (Some(d), Some(value)) = (desc(name), value) else {
            return;
        };
        let o = self.owner;
        let label_values = [&o.id, &o.name, &o.image, &o.container, &o.pod, &o.namespace]
            .into_iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        self.out.push(cri::Metric {
            name: name.to_string(),
            // Gathered live.
            timestamp: 0,
            metric_type: d.kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }
}

fn v(x: &Option<cri::UInt64Value>) -> Option<u64> {
    x.as_ref().map(|x| x.value)
}

fn cpu_memory(s: &mut Series<'_>, cpu: Option<&cri::CpuUsage>, mem: Option<&cri::MemoryUsage>) {
    let secs = cpu
        .and_then(|c| v(&c.usage_core_nano_seconds))
        .map(|ns| ns / 1_000_000_000);
    s.push("container_cpu_usage_seconds_total", &["total"], secs);
    if let Some(m) = mem {
        s.push("container_memory_usage_bytes", &[], v(&m.usage_bytes));
        s.push(
            "container_memory_working_set_bytes",
            &[],
            v(&m.working_set_bytes),
        );
        s.push("container_memory_rss", &[], v(&m.rss_bytes));
        for (kind, n) in [
            ("pgfault", &m.page_faults),
            ("pgmajfault", &m.major_page_faults),
        ] {
            s.push(
                "container_memory_failures_total",
                &[kind, "container"],
                v(n),
            );
        }
    }
}

/// The metrics of one container: its stats plus what its record says
/// (start time, OOM kills, the limits of its spec).
pub fn container_metrics(
    owner: &Owner,
    st: &cri::ContainerStats,
    rec: &ContainerRecord,
) -> Vec<cri::Metric> {
    let mut s = Series {
        owner,
        out: Vec::new(),
    };
    cpu_memory(&mut s, st.cpu.as_ref(), st.memory.as_ref());
    s.push(
        "container_memory_swap",
        &[],
        st.swap.as_ref().and_then(|w| v(&w.swap_usage_bytes)),
    );
    let res = |p: &str| {
        rec.spec
            .pointer(&format!("/linux/resources/{p}"))
            .and_then(|x| x.as_i64())
    };
    // cAdvisor reports 0 for "no limit".
    let limit = res("memory/limit")
        .filter(|l| *l > 0)
        .map_or(0, |l| l as u64);
    s.push("container_spec_memory_limit_bytes", &[], Some(limit));
    s.push(
        "container_spec_cpu_period",
        &[],
        res("cpu/period").map(|x| x.max(0) as u64),
    );
    s.push(
        "container_spec_cpu_quota",
        &[],
        res("cpu/quota").filter(|q| *q > 0).map(|q| q as u64),
    );
    s.push(
        "container_spec_cpu_shares",
        &[],
        res("cpu/shares").map(|x| x.max(0) as u64),
    );
    if let Some(wl) = &st.writable_layer {
        let device = wl
            .fs_id
            .as_ref()
            .map(|f| f.mountpoint.as_str())
            .unwrap_or_default();
        s.push("container_fs_usage_bytes", &[device], v(&wl.used_bytes));
        s.push("container_fs_inodes_used", &[device], v(&wl.inodes_used));
    }
    let started = (rec.started_at > 0).then_some(rec.started_at as u64 / 1_000_000_000);
    s.push("container_start_time_seconds", &[], started);
    s.push(
        "container_oom_events_total",
        &[],
        Some(u64::from(rec.oom_killed)),
    );
    s.out
}

/// The pod-level metrics (the pod cgroup, the pod's network namespace).
pub fn pod_metrics(owner: &Owner, linux: &cri::LinuxPodSandboxStats) -> Vec<cri::Metric> {
    let mut s = Series {
        owner,
        out: Vec::new(),
    };
    cpu_memory(&mut s, linux.cpu.as_ref(), linux.memory.as_ref());
    s.push(
        "container_processes",
        &[],
        linux.process.as_ref().and_then(|p| v(&p.process_count)),
    );
    for i in linux.network.iter().flat_map(|n| &n.interfaces) {
        let name = i.name.as_str();
        s.push(
            "container_network_receive_bytes_total",
            &[name],
            v(&i.rx_bytes),
        );
        s.push(
            "container_network_receive_errors_total",
            &[name],
            v(&i.rx_errors),
        );
        s.push(
            "container_network_transmit_bytes_total",
            &[name],
            v(&i.tx_bytes),
        );
        s.push(
            "container_network_transmit_errors_total",
            &[name],
            v(&i.tx_errors),
        );
    }
    s.out
}

/// `ListPodSandboxMetrics`: every ready pod and its running containers.
pub async fn list_pod_sandbox_metrics(crid: &Crid) -> Result<cri::ListPodSandboxMetricsResponse> {
    let all = super::stats::list_pods(crid, cri::ListPodSandboxStatsRequest { filter: None })
        .await?
        .stats;
    let mut pods = Vec::new();
    for ps in all {
        let Some(attrs) = ps.attributes.as_ref() else {
            continue;
        };
        let Some(sb) = crid.sandboxes.all().into_iter().find(|s| s.id == attrs.id) else {
            // Removed while the stats were read.
            continue;
        };
        let pod = Owner {
            id: super::container::pod_cgroup(&sb).unwrap_or_default(),
            name: sb.id.clone(),
            pod: sb.name.clone(),
            namespace: sb.namespace.clone(),
            ..Default::default()
        };
        let Some(linux) = ps.linux.as_ref() else {
            continue;
        };
        let mut out = cri::PodSandboxMetrics {
            pod_sandbox_id: sb.id.clone(),
            metrics: pod_metrics(&pod, linux),
            container_metrics: Vec::new(),
        };
        for cs in &linux.containers {
            let Some(id) = cs.attributes.as_ref().map(|a| a.id.as_str()) else {
                continue;
            };
            let Some(rec) = crid.containers.get(id) else {
                continue;
            };
            let owner = Owner {
                id: super::stats::container_cgroup(&rec).unwrap_or_default(),
                name: rec.id.clone(),
                image: rec.image.clone(),
                container: rec.name.clone(),
                ..pod.clone()
            };
            out.container_metrics.push(cri::ContainerMetrics {
                container_id: rec.id.clone(),
                metrics: container_metrics(&owner, cs, &rec),
            });
        }
        pods.push(out);
    }
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics: pods })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::ContainerState;

    fn u(value: u64) -> Option<cri::UInt64Value> {
        Some(cri::UInt64Value { value })
    }

    fn rec() -> ContainerRecord {
        ContainerRecord {
            name: "web".into(),
            state: ContainerState::Running,
            started_at: 1_700_000_000_500_000_000,
            spec: serde_json::json!({"linux": {"resources": {
                "memory": {"limit": 67108864},
                "cpu": {"period": 100000, "quota": 50000, "shares": 512}
            }}}),
            pid: Some(9),
            oom_killed: true,
            ..ContainerRecord::sample("c1", "sb")
        }
    }

    fn prom_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    #[test]
    fn descriptors_are_unique_prometheus_names_with_cadvisor_conventions() {
        let d = list_metric_descriptors().descriptors;
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), d.len(), "unique names");
        for m in &d {
            assert!(
                prom_name(&m.name) && m.name.starts_with("container_"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty());
            assert_eq!(&m.label_keys[..6], &BASE_LABELS.map(String::from)[..]);
            assert!(m.label_keys.iter().all(|k| prom_name(k)));
            let desc = desc(&m.name).unwrap();
            // Prometheus: counters end in _total, gauges do not.
            assert_eq!(
                desc.kind == MetricType::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
        for wanted in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_usage_bytes",
            "container_memory_rss",
            "container_spec_memory_limit_bytes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
            "container_fs_usage_bytes",
            "container_processes",
            "container_start_time_seconds",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing");
        }
    }

    /// Every metric names a descriptor and has a value per label key.
    fn check(ms: &[cri::Metric]) {
        let d = list_metric_descriptors().descriptors;
        for m in ms {
            let desc = d.iter().find(|x| x.name == m.name).expect("descriptor");
            assert_eq!(m.label_values.len(), desc.label_keys.len(), "{}", m.name);
        }
    }

    fn value(ms: &[cri::Metric], name: &str, extra: &[&str]) -> Option<u64> {
        get(ms, name, extra).and_then(|m| m.value).map(|v| v.value)
    }

    fn get<'a>(ms: &'a [cri::Metric], name: &str, extra: &[&str]) -> Option<&'a cri::Metric> {
        ms.iter().find(|m| {
            m.name == name
                && m.label_values[6..] == *extra.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        })
    }

    #[test]
    fn container_metrics_carry_the_stats_and_the_records_facts() {
        let owner = Owner {
            id: "/crid/sb/c1".into(),
            name: "c1".into(),
            image: "busybox".into(),
            container: "web".into(),
            pod: "p".into(),
            namespace: "default".into(),
        };
        let st = cri::ContainerStats {
            cpu: Some(cri::CpuUsage {
                usage_core_nano_seconds: u(2_900_000_000),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: u(1000),
                usage_bytes: u(1500),
                rss_bytes: u(700),
                page_faults: u(12),
                major_page_faults: None,
                ..Default::default()
            }),
            writable_layer: Some(cri::FilesystemUsage {
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: "/var/lib/x".into(),
                }),
                used_bytes: u(4096),
                inodes_used: u(3),
                ..Default::default()
            }),
            swap: Some(cri::SwapUsage {
                swap_usage_bytes: u(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ms = container_metrics(&owner, &st, &rec());
        check(&ms);
        let val = |n: &str, e: &[&str]| value(&ms, n, e);
        assert_eq!(
            val("container_cpu_usage_seconds_total", &["total"]),
            Some(2)
        );
        assert_eq!(val("container_memory_working_set_bytes", &[]), Some(1000));
        assert_eq!(val("container_memory_usage_bytes", &[]), Some(1500));
        assert_eq!(val("container_memory_rss", &[]), Some(700));
        assert_eq!(val("container_memory_swap", &[]), Some(0));
        assert_eq!(
            val("container_memory_failures_total", &["pgfault", "container"]),
            Some(12)
        );
        assert_eq!(
            val(
                "container_memory_failures_total",
                &["pgmajfault", "container"]
            ),
            None,
            "unknown: left out"
        );
        assert_eq!(
            val("container_spec_memory_limit_bytes", &[]),
            Some(67108864)
        );
        assert_eq!(val("container_spec_cpu_quota", &[]), Some(50000));
        assert_eq!(val("container_spec_cpu_shares", &[]), Some(512));
        assert_eq!(val("container_fs_usage_bytes", &["/var/lib/x"]), Some(4096));
        assert_eq!(
            val("container_start_time_seconds", &[]),
            Some(1_700_000_000)
        );
        assert_eq!(val("container_oom_events_total", &[]), Some(1));
        let cpu = get(&ms, "container_cpu_usage_seconds_total", &["total"]).unwrap();
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        assert_eq!(
            cpu.label_values[..6],
            ["/crid/sb/c1", "c1", "busybox", "web", "p", "default"]
        );
        assert!(
            ms.iter().all(|m| !m.name.starts_with("container_network")),
            "network is pod-level"
        );
        // No limit: cAdvisor's 0.
        let mut r = rec();
        r.spec = serde_json::json!({});
        let ms = container_metrics(&owner, &st, &r);
        assert_eq!(
            get(&ms, "container_spec_memory_limit_bytes", &[]).and_then(|m| m.value),
            u(0)
        );
        assert!(get(&ms, "container_spec_cpu_quota", &[]).is_none());
    }

    #[test]
    fn pod_metrics_have_network_per_interface_and_no_container_name() {
        let owner = Owner {
            id: "/crid/sb".into(),
            name: "sb".into(),
            pod: "p".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let linux = cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                usage_core_nano_seconds: u(5_000_000_000),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: u(10),
                ..Default::default()
            }),
            process: Some(cri::ProcessUsage {
                process_count: u(4),
                ..Default::default()
            }),
            network: Some(cri::NetworkUsage {
                interfaces: vec![cri::NetworkInterfaceUsage {
                    name: "eth0".into(),
                    rx_bytes: u(100),
                    rx_errors: u(1),
                    tx_bytes: u(200),
                    tx_errors: u(2),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let ms = pod_metrics(&owner, &linux);
        check(&ms);
        let val = |n: &str, e: &[&str]| value(&ms, n, e);
        assert_eq!(
            val("container_cpu_usage_seconds_total", &["total"]),
            Some(5)
        );
        assert_eq!(val("container_processes", &[]), Some(4));
        assert_eq!(
            val("container_network_receive_bytes_total", &["eth0"]),
            Some(100)
        );
        assert_eq!(
            val("container_network_transmit_bytes_total", &["eth0"]),
            Some(200)
        );
        assert_eq!(
            val("container_network_transmit_errors_total", &["eth0"]),
            Some(2)
        );
        assert!(ms
            .iter()
            .all(|m| m.label_values[3].is_empty() && m.label_values[2].is_empty()));
        assert_eq!(val("container_memory_usage_bytes", &[]), None);
    }
}
