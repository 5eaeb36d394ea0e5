//! ListMetricDescriptors and ListPodSandboxMetrics: the kubelet's CRI
//! metrics (its `/metrics/cadvisor` when the runtime provides them). The
//! figures come from the stats RPCs' collectors ([`crate::stats`],
//! [`super::stats`]), named and labelled as cAdvisor does, so dashboards
//! and alerts written for cAdvisor keep working; the set is the one the
//! CRI validation suite expects of a runtime (cAdvisor's names as the
//! kubelet exposes them), less hugetlb and ulimits.
//!
//! Labels, in this order on every metric: `id` (the cgroup path), `name`
//! (container id, or sandbox id for pod-level series), `image`,
//! `container` (the container's name; empty for pod-level series), `pod`,
//! `namespace`, then the metric's own (`cpu`, `interface`, `device`,
//! `failure_type`/`scope`, `major`/`minor`/`operation`). Values are the
//! API's unsigned integers: seconds are whole seconds (the API has no
//! fractions), times are Unix seconds, and a figure crid cannot read is
//! left out rather than sent as 0. Network series are pod-level
//! (containers share the pod's network namespace); process, file and
//! block I/O series are per container.

use super::Crid;
use crate::cgroups::RealCgroupFs;
use crate::container::record::{ContainerRecord, ContainerState};
use crate::error::Result;
use crate::stats::{self, CgroupStats, InterfaceStats, ProcStats};
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

const DEVICE: &[&str] = &["device"];
const IFACE: &[&str] = &["interface"];

/// Every metric, with cAdvisor's names, help texts and types.
const DESCRIPTORS: &[Desc] = &[
    counter("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", &["cpu"]),
    counter("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", &[]),
    counter("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", &[]),
    counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", &[]),
    counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", &[]),
    counter("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", &[]),
    gauge("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", &[]),
    gauge("container_memory_working_set_bytes", "Current working set in bytes.", &[]),
    gauge("container_memory_rss", "Size of RSS in bytes.", &[]),
    gauge("container_memory_cache", "Number of bytes of page cache memory.", &[]),
    gauge("container_memory_mapped_file", "Size of memory mapped files in bytes.", &[]),
    gauge("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", &[]),
    gauge("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", &[]),
    gauge("container_memory_swap", "Container swap usage in bytes.", &[]),
    // cAdvisor's one counter without _total.
    counter("container_memory_failcnt", "Number of memory usage hits limits", &[]),
    counter("container_memory_failures_total", "Cumulative count of memory allocation failures.", &["failure_type", "scope"]),
    counter("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", &[]),
    counter("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", &[]),
    counter("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", &[]),
    counter("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", &[]),
    counter("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to I/O congestion.", &[]),
    counter("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to I/O congestion.", &[]),
    gauge("container_spec_memory_limit_bytes", "Memory limit for the container.", &[]),
    gauge("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", &[]),
    gauge("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", &[]),
    gauge("container_spec_cpu_period", "CPU period of the container.", &[]),
    gauge("container_spec_cpu_quota", "CPU quota of the container.", &[]),
    gauge("container_spec_cpu_shares", "CPU share of the container.", &[]),
    gauge("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", DEVICE),
    gauge("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", DEVICE),
    gauge("container_fs_inodes_free", "Number of available Inodes", DEVICE),
    gauge("container_fs_inodes_total", "Number of Inodes", DEVICE),
    counter("container_fs_reads_bytes_total", "Cumulative count of bytes read", DEVICE),
    counter("container_fs_reads_total", "Cumulative count of reads completed", DEVICE),
    counter("container_fs_writes_bytes_total", "Cumulative count of bytes written", DEVICE),
    counter("container_fs_writes_total", "Cumulative count of writes completed", DEVICE),
    counter("container_blkio_device_usage_total", "Blkio Device bytes usage", &["device", "major", "minor", "operation"]),
    gauge("container_processes", "Number of processes running inside the container.", &[]),
    gauge("container_threads", "Number of threads running inside the container", &[]),
    gauge("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", &[]),
    gauge("container_file_descriptors", "Number of open file descriptors for the container.", &[]),
    gauge("container_sockets", "Number of open sockets for the container.", &[]),
    gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", &[]),
    gauge("container_last_seen", "Last time a container was seen by the exporter", &[]),
    counter("container_oom_events_total", "Count of out of memory events observed for the container", &[]),
    counter("container_network_receive_bytes_total", "Cumulative count of bytes received", IFACE),
    counter("container_network_receive_packets_total", "Cumulative count of packets received", IFACE),
    counter("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", IFACE),
    counter("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", IFACE),
    counter("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", IFACE),
    counter("container_network_transmit_packets_total", "Cumulative count of packets transmitted", IFACE),
    counter("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", IFACE),
    counter("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", IFACE),
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

const NS_PER_SEC: u64 = 1_000_000_000;
/// The kernel's CFS period (µs) and CPU shares when none are set.
const CFS_PERIOD_US: u64 = 100_000;
const CPU_SHARES: u64 = 1024;
const US_PER_SEC: u64 = 1_000_000;

/// CPU, memory and pressure: the same at pod and container level.
fn cgroup_metrics(s: &mut Series<'_>, cg: &CgroupStats, now_secs: u64) {
    let secs = |ns: Option<u64>| ns.map(|n| n / NS_PER_SEC);
    s.push(
        "container_cpu_usage_seconds_total",
        &["total"],
        secs(cg.cpu_ns),
    );
    s.push(
        "container_cpu_user_seconds_total",
        &[],
        secs(cg.cpu_user_ns),
    );
    s.push(
        "container_cpu_system_seconds_total",
        &[],
        secs(cg.cpu_system_ns),
    );
    s.push("container_cpu_cfs_periods_total", &[], cg.cfs_periods);
    s.push(
        "container_cpu_cfs_throttled_periods_total",
        &[],
        cg.cfs_throttled_periods,
    );
    s.push(
        "container_cpu_cfs_throttled_seconds_total",
        &[],
        secs(cg.cfs_throttled_ns),
    );
    s.push("container_memory_usage_bytes", &[], cg.memory_usage);
    s.push("container_memory_working_set_bytes", &[], cg.working_set);
    s.push("container_memory_rss", &[], cg.rss);
    s.push("container_memory_cache", &[], cg.cache);
    s.push("container_memory_mapped_file", &[], cg.mapped_file);
    s.push("container_memory_kernel_usage", &[], cg.kernel);
    s.push("container_memory_max_usage_bytes", &[], cg.max_usage);
    s.push("container_memory_swap", &[], cg.swap_usage);
    s.push("container_memory_failcnt", &[], cg.failcnt);
    for (kind, n) in [
        ("pgfault", cg.page_faults),
        ("pgmajfault", cg.major_page_faults),
    ] {
        s.push("container_memory_failures_total", &[kind, "container"], n);
    }
    let psi = [
        (
            &cg.psi.cpu,
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_cpu_stalled_seconds_total",
        ),
        (
            &cg.psi.memory,
            "container_pressure_memory_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ),
        (
            &cg.psi.io,
            "container_pressure_io_waiting_seconds_total",
            "container_pressure_io_stalled_seconds_total",
        ),
    ];
    for (p, waiting, stalled) in psi {
        // "some" tasks waited; "full": none could run.
        if let Some(p) = p {
            s.push(waiting, &[], Some(p.some.total / US_PER_SEC));
            s.push(stalled, &[], Some(p.full.total / US_PER_SEC));
        }
    }
    s.push("container_last_seen", &[], Some(now_secs));
}

/// The writable layer's filesystem: its identifier and capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// The `device` label: the filesystem's mountpoint (as ImageFsInfo).
    pub device: String,
    /// Its size in bytes.
    pub capacity: Option<u64>,
    /// Its inodes.
    pub inodes: Option<u64>,
    /// Its free inodes.
    pub inodes_free: Option<u64>,
}

/// What one container's metrics are made of.
pub struct ContainerSample<'a> {
    /// Its cgroup's figures.
    pub cgroup: &'a CgroupStats,
    /// Its processes.
    pub procs: Option<ProcStats>,
    /// Its writable layer (containerd's snapshot usage).
    pub writable_layer: Option<&'a cri::FilesystemUsage>,
    /// The writable layers' filesystem.
    pub fs: &'a Filesystem,
    /// Its record (spec, start time, OOM kills).
    pub rec: &'a ContainerRecord,
    /// The time of the sample, Unix seconds.
    pub now_secs: u64,
}

/// The metrics of one container.
pub fn container_metrics(owner: &Owner, c: &ContainerSample<'_>) -> Vec<cri::Metric> {
    let mut s = Series {
        owner,
        out: Vec::new(),
    };
    cgroup_metrics(&mut s, c.cgroup, c.now_secs);
    let res = |p: &str| {
        c.rec
            .spec
            .pointer(&format!("/linux/resources/{p}"))
            .and_then(|x| x.as_i64())
    };
    // cAdvisor's 0 for "not set" / unlimited.
    let limit = |p: &str| Some(res(p).filter(|l| *l > 0).map_or(0, |l| l as u64));
    s.push(
        "container_spec_memory_limit_bytes",
        &[],
        limit("memory/limit"),
    );
    s.push(
        "container_spec_memory_swap_limit_bytes",
        &[],
        limit("memory/swap"),
    );
    s.push(
        "container_spec_memory_reservation_limit_bytes",
        &[],
        limit("memory/reservation"),
    );
    // Unset in the spec: the kernel's defaults are in effect.
    let or = |p: &str, default: u64| Some(res(p).filter(|x| *x > 0).map_or(default, |x| x as u64));
    s.push(
        "container_spec_cpu_period",
        &[],
        or("cpu/period", CFS_PERIOD_US),
    );
    let quota = res("cpu/quota").filter(|q| *q > 0).map(|q| q as u64);
    s.push("container_spec_cpu_quota", &[], quota);
    s.push(
        "container_spec_cpu_shares",
        &[],
        or("cpu/shares", CPU_SHARES),
    );
    let dev = [c.fs.device.as_str()];
    if let Some(wl) = c.writable_layer {
        s.push(
            "container_fs_usage_bytes",
            &dev,
            wl.used_bytes.map(|v| v.value),
        );
        s.push("container_fs_limit_bytes", &dev, c.fs.capacity);
        s.push("container_fs_inodes_total", &dev, c.fs.inodes);
        s.push("container_fs_inodes_free", &dev, c.fs.inodes_free);
    }
    for d in &c.cgroup.io {
        let dev_id = format!("{}:{}", d.major, d.minor);
        let (major, minor) = (d.major.to_string(), d.minor.to_string());
        let one = [dev_id.as_str()];
        s.push("container_fs_reads_bytes_total", &one, Some(d.read_bytes));
        s.push("container_fs_reads_total", &one, Some(d.reads));
        s.push("container_fs_writes_bytes_total", &one, Some(d.write_bytes));
        s.push("container_fs_writes_total", &one, Some(d.writes));
        for (op, v) in [("Read", d.read_bytes), ("Write", d.write_bytes)] {
            s.push(
                "container_blkio_device_usage_total",
                &[&dev_id, &major, &minor, op],
                Some(v),
            );
        }
    }
    if let Some(p) = c.procs {
        s.push("container_processes", &[], Some(p.processes));
        s.push("container_threads", &[], Some(p.threads));
        s.push("container_file_descriptors", &[], Some(p.fds));
        s.push("container_sockets", &[], Some(p.sockets));
    }
    // 0: unlimited, as cAdvisor.
    s.push(
        "container_threads_max",
        &[],
        Some(c.cgroup.pids_max.unwrap_or(0)),
    );
    let started = (c.rec.started_at > 0).then_some(c.rec.started_at as u64 / NS_PER_SEC);
    s.push("container_start_time_seconds", &[], started);
    s.push(
        "container_oom_events_total",
        &[],
        Some(u64::from(c.rec.oom_killed)),
    );
    s.out
}

/// The pod-level metrics (the pod cgroup, the pod's network namespace).
pub fn pod_metrics(
    owner: &Owner,
    cg: &CgroupStats,
    net: &[InterfaceStats],
    now_secs: u64,
) -> Vec<cri::Metric> {
    let mut s = Series {
        owner,
        out: Vec::new(),
    };
    cgroup_metrics(&mut s, cg, now_secs);
    // Tasks in the pod's cgroup tree (pids.current).
    s.push("container_processes", &[], cg.pids);
    for i in net {
        let n = [i.name.as_str()];
        s.push(
            "container_network_receive_bytes_total",
            &n,
            Some(i.rx_bytes),
        );
        s.push(
            "container_network_receive_packets_total",
            &n,
            Some(i.rx_packets),
        );
        s.push(
            "container_network_receive_packets_dropped_total",
            &n,
            Some(i.rx_dropped),
        );
        s.push(
            "container_network_receive_errors_total",
            &n,
            Some(i.rx_errors),
        );
        s.push(
            "container_network_transmit_bytes_total",
            &n,
            Some(i.tx_bytes),
        );
        s.push(
            "container_network_transmit_packets_total",
            &n,
            Some(i.tx_packets),
        );
        s.push(
            "container_network_transmit_packets_dropped_total",
            &n,
            Some(i.tx_dropped),
        );
        s.push(
            "container_network_transmit_errors_total",
            &n,
            Some(i.tx_errors),
        );
    }
    s.out
}

/// Size and inodes of the filesystem at `mountpoint`.
fn filesystem(mountpoint: &str) -> Filesystem {
    let mut fs = Filesystem {
        device: mountpoint.to_string(),
        ..Default::default()
    };
    if mountpoint.is_empty() {
        return fs;
    }
    match nix::sys::statvfs::statvfs(mountpoint) {
        Ok(v) => {
            fs.capacity = Some(v.blocks().saturating_mul(v.fragment_size()));
            fs.inodes = Some(v.files());
            fs.inodes_free = Some(v.files_free());
        }
        Err(e) => {
            tracing::debug!(mountpoint, error = %e, "statvfs of the writable layers' filesystem")
        }
    }
    fs
}

/// `ListPodSandboxMetrics`: every ready pod and its running containers.
pub async fn list_pod_sandbox_metrics(crid: &Crid) -> Result<cri::ListPodSandboxMetricsResponse> {
    let c = super::stats::ctx(crid).await?;
    let fs = filesystem(&c.fs_mountpoint);
    let now_secs = c.ts.max(0) as u64 / NS_PER_SEC;
    let mut pods = Vec::new();
    for sb in crid.sandboxes.all().into_iter().filter(|s| s.is_ready()) {
        let pod_cg = super::container::pod_cgroup(&sb).unwrap_or_default();
        let pod = Owner {
            id: pod_cg.clone(),
            name: sb.id.clone(),
            pod: sb.name.clone(),
            namespace: sb.namespace.clone(),
            ..Default::default()
        };
        let cg = stats::read(&RealCgroupFs, &c.hierarchies, &pod_cg);
        let net = super::stats::pod_interfaces(&sb).unwrap_or_default();
        let mut out = cri::PodSandboxMetrics {
            pod_sandbox_id: sb.id.clone(),
            metrics: pod_metrics(&pod, &cg, &net, now_secs),
            container_metrics: Vec::new(),
        };
        let mut recs = crid.containers.of_sandbox(&sb.id);
        recs.retain(|r| r.state == ContainerState::Running);
        recs.sort_by_key(|r| r.created_at);
        for rec in recs {
            let ctr_cg = super::stats::container_cgroup(&rec).unwrap_or_default();
            let cg = stats::read(&RealCgroupFs, &c.hierarchies, &ctr_cg);
            let procs = stats::proc_stats(&RealCgroupFs, &c.hierarchies, &ctr_cg, "/proc".as_ref());
            let wl = super::stats::writable_layer(crid, &c, &rec).await?;
            let owner = Owner {
                id: ctr_cg,
                name: rec.id.clone(),
                image: rec.image.clone(),
                container: rec.name.clone(),
                ..pod.clone()
            };
            let sample = ContainerSample {
                cgroup: &cg,
                procs,
                writable_layer: wl.as_ref(),
                fs: &fs,
                rec: &rec,
                now_secs,
            };
            out.container_metrics.push(cri::ContainerMetrics {
                container_id: rec.id.clone(),
                metrics: container_metrics(&owner, &sample),
            });
        }
        pods.push(out);
    }
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics: pods })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{DeviceIo, Pressure, PressureLine, Psi};

    fn rec() -> ContainerRecord {
        ContainerRecord {
            name: "web".into(),
            state: ContainerState::Running,
            started_at: 1_700_000_000_500_000_000,
            spec: serde_json::json!({"linux": {"resources": {
                "memory": {"limit": 67108864, "swap": 134217728},
                "cpu": {"period": 100000, "quota": 50000, "shares": 512}
            }}}),
            pid: Some(9),
            oom_killed: true,
            config: None,
            ..ContainerRecord::sample("c1", "sb")
        }
    }

    fn prom_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    /// cAdvisor's container metrics as the kubelet exposes them (the set
    /// the CRI validation suite expects), less hugetlb and ulimits.
    const CADVISOR: &[&str] = &[
        "container_blkio_device_usage_total",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_file_descriptors",
        "container_fs_inodes_free",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_fs_reads_bytes_total",
        "container_fs_reads_total",
        "container_fs_usage_bytes",
        "container_fs_writes_bytes_total",
        "container_fs_writes_total",
        "container_last_seen",
        "container_memory_cache",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_kernel_usage",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
        "container_network_transmit_packets_total",
        "container_oom_events_total",
        "container_pressure_cpu_stalled_seconds_total",
        "container_pressure_cpu_waiting_seconds_total",
        "container_pressure_io_stalled_seconds_total",
        "container_pressure_io_waiting_seconds_total",
        "container_pressure_memory_stalled_seconds_total",
        "container_pressure_memory_waiting_seconds_total",
        "container_processes",
        "container_sockets",
        "container_spec_cpu_period",
        "container_spec_cpu_quota",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_spec_memory_reservation_limit_bytes",
        "container_spec_memory_swap_limit_bytes",
        "container_start_time_seconds",
        "container_threads",
        "container_threads_max",
    ];

    #[test]
    fn descriptors_are_cadvisors_names_with_prometheus_conventions() {
        let d = list_metric_descriptors().descriptors;
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), d.len(), "unique names");
        assert_eq!(names, CADVISOR, "exactly cAdvisor's set");
        for m in &d {
            assert!(prom_name(&m.name), "{}", m.name);
            assert!(!m.help.is_empty());
            assert_eq!(&m.label_keys[..6], &BASE_LABELS.map(String::from)[..]);
            assert!(m.label_keys.iter().all(|k| prom_name(k)));
            let desc = desc(&m.name).unwrap();
            // Prometheus: counters end in _total, gauges do not, but for
            // two of cAdvisor's old names (kept as the kubelet shows them).
            let odd = ["container_memory_failcnt", "container_fs_inodes_total"];
            let counter = desc.kind == MetricType::Counter;
            assert_eq!(
                counter,
                m.name.ends_with("_total") != odd.contains(&m.name.as_str()),
                "{}",
                m.name
            );
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
        ms.iter()
            .find(|m| m.name == name && m.label_values[6..] == *extra)
    }

    fn cgroup() -> CgroupStats {
        let line = |total| PressureLine {
            total,
            ..Default::default()
        };
        CgroupStats {
            cpu_ns: Some(2_900_000_000),
            cpu_user_ns: Some(2_000_000_000),
            cpu_system_ns: Some(900_000_000),
            cfs_periods: Some(40),
            cfs_throttled_periods: Some(3),
            cfs_throttled_ns: Some(1_500_000_000),
            memory_usage: Some(1500),
            working_set: Some(1000),
            rss: Some(700),
            cache: Some(500),
            page_faults: Some(12),
            swap_usage: Some(0),
            failcnt: Some(2),
            pids: Some(4),
            pids_max: None,
            psi: Psi {
                cpu: Some(Pressure {
                    some: line(3_000_000),
                    full: line(1_000_000),
                }),
                ..Default::default()
            },
            io: vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn container_metrics_carry_the_cgroup_the_processes_and_the_record() {
        let owner = Owner {
            id: "/crid/sb/c1".into(),
            name: "c1".into(),
            image: "busybox".into(),
            container: "web".into(),
            pod: "p".into(),
            namespace: "default".into(),
        };
        let wl = cri::FilesystemUsage {
            used_bytes: Some(cri::UInt64Value { value: 4096 }),
            ..Default::default()
        };
        let fs = Filesystem {
            device: "/var/lib/x".into(),
            capacity: Some(1 << 30),
            inodes: Some(1000),
            inodes_free: Some(900),
        };
        let (cg, r) = (cgroup(), rec());
        let sample = ContainerSample {
            cgroup: &cg,
            procs: Some(ProcStats {
                processes: 2,
                threads: 3,
                fds: 7,
                sockets: 1,
            }),
            writable_layer: Some(&wl),
            fs: &fs,
            rec: &r,
            now_secs: 1_700_000_100,
        };
        let ms = container_metrics(&owner, &sample);
        check(&ms);
        let val = |n: &str, e: &[&str]| value(&ms, n, e);
        assert_eq!(
            val("container_cpu_usage_seconds_total", &["total"]),
            Some(2)
        );
        assert_eq!(val("container_cpu_user_seconds_total", &[]), Some(2));
        assert_eq!(val("container_cpu_system_seconds_total", &[]), Some(0));
        assert_eq!(
            val("container_cpu_cfs_throttled_periods_total", &[]),
            Some(3)
        );
        assert_eq!(
            val("container_cpu_cfs_throttled_seconds_total", &[]),
            Some(1)
        );
        assert_eq!(val("container_memory_working_set_bytes", &[]), Some(1000));
        assert_eq!(val("container_memory_cache", &[]), Some(500));
        assert_eq!(val("container_memory_swap", &[]), Some(0));
        assert_eq!(val("container_memory_failcnt", &[]), Some(2));
        let pgfault = val("container_memory_failures_total", &["pgfault", "container"]);
        assert_eq!(pgfault, Some(12));
        let pgmaj = val(
            "container_memory_failures_total",
            &["pgmajfault", "container"],
        );
        assert_eq!(pgmaj, None, "unknown: left out");
        assert_eq!(val("container_memory_mapped_file", &[]), None);
        assert_eq!(
            val("container_pressure_cpu_waiting_seconds_total", &[]),
            Some(3)
        );
        assert_eq!(
            val("container_pressure_cpu_stalled_seconds_total", &[]),
            Some(1)
        );
        assert_eq!(
            val("container_pressure_io_waiting_seconds_total", &[]),
            None
        );
        assert_eq!(
            val("container_spec_memory_limit_bytes", &[]),
            Some(67108864)
        );
        assert_eq!(
            val("container_spec_memory_swap_limit_bytes", &[]),
            Some(134217728)
        );
        assert_eq!(
            val("container_spec_memory_reservation_limit_bytes", &[]),
            Some(0)
        );
        assert_eq!(val("container_spec_cpu_quota", &[]), Some(50000));
        assert_eq!(val("container_spec_cpu_shares", &[]), Some(512));
        assert_eq!(val("container_fs_usage_bytes", &["/var/lib/x"]), Some(4096));
        assert_eq!(
            val("container_fs_limit_bytes", &["/var/lib/x"]),
            Some(1 << 30)
        );
        assert_eq!(val("container_fs_inodes_free", &["/var/lib/x"]), Some(900));
        assert_eq!(val("container_fs_reads_bytes_total", &["8:0"]), Some(4096));
        assert_eq!(val("container_fs_writes_total", &["8:0"]), Some(2));
        let write = val(
            "container_blkio_device_usage_total",
            &["8:0", "8", "0", "Write"],
        );
        assert_eq!(write, Some(8192));
        assert_eq!(val("container_processes", &[]), Some(2));
        assert_eq!(val("container_threads", &[]), Some(3));
        assert_eq!(val("container_threads_max", &[]), Some(0), "unlimited");
        assert_eq!(val("container_file_descriptors", &[]), Some(7));
        assert_eq!(val("container_sockets", &[]), Some(1));
        assert_eq!(
            val("container_start_time_seconds", &[]),
            Some(1_700_000_000)
        );
        assert_eq!(val("container_last_seen", &[]), Some(1_700_000_100));
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
        // No limits in the spec: cAdvisor's 0; no quota: left out.
        let mut r = rec();
        r.spec = serde_json::json!({});
        let ms = container_metrics(&owner, &ContainerSample { rec: &r, ..sample });
        assert_eq!(
            value(&ms, "container_spec_memory_limit_bytes", &[]),
            Some(0)
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
        let net = [InterfaceStats {
            name: "eth0".into(),
            rx_bytes: 100,
            rx_packets: 3,
            rx_errors: 1,
            rx_dropped: 0,
            tx_bytes: 200,
            tx_packets: 4,
            tx_errors: 2,
            tx_dropped: 5,
        }];
        let ms = pod_metrics(&owner, &cgroup(), &net, 7);
        check(&ms);
        let val = |n: &str, e: &[&str]| value(&ms, n, e);
        assert_eq!(
            val("container_cpu_usage_seconds_total", &["total"]),
            Some(2)
        );
        assert_eq!(val("container_processes", &[]), Some(4));
        assert_eq!(
            val("container_network_receive_bytes_total", &["eth0"]),
            Some(100)
        );
        assert_eq!(
            val("container_network_receive_packets_total", &["eth0"]),
            Some(3)
        );
        assert_eq!(
            val("container_network_transmit_bytes_total", &["eth0"]),
            Some(200)
        );
        let dropped = val(
            "container_network_transmit_packets_dropped_total",
            &["eth0"],
        );
        assert_eq!(dropped, Some(5));
        assert_eq!(
            val("container_network_transmit_errors_total", &["eth0"]),
            Some(2)
        );
        assert_eq!(val("container_last_seen", &[]), Some(7));
        assert!(ms
            .iter()
            .all(|m| m.label_values[3].is_empty() && m.label_values[2].is_empty()));
        assert!(
            get(&ms, "container_fs_usage_bytes", &[]).is_none(),
            "per container only"
        );
    }
}
