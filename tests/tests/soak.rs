//! A short soak in CI (issue 14; the 1000-cycle figures come from
//! `bench_soak`, see docs/RELIABILITY.md): 100 pod lifecycles (pod with its
//! own netns, container, ExecSync, stop, remove) in a row, every one of
//! which must succeed; afterwards nothing of any removed pod is left
//! (mounts, cgroups, IPAM, processes, containerd objects, crid records),
//! and crid's open fds and memory are flat from cycle 20 to cycle 100.

use crid_e2e::pods::Node;
use crid_e2e::soak::{cycle, fd_count, leftovers, rss_kb, Leftovers};

/// Subnet / bridge number of this test's network (10.244.N.0/24).
const NET: u8 = 176;
const CYCLES: usize = 100;
const WARM_UP: usize = 20;
/// Allowed RSS growth over the last 80 cycles: the release soak grew
/// 20 kB in 900 cycles, the dev build 0.5 MB; a leak of 50 kB per cycle
/// would be 4 MB here.
const RSS_SLACK_KB: u64 = 4096;

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_pod_lifecycles_leave_nothing_and_keep_crid_flat() {
    let (mut n, net) = Node::start_with_net(NET).await;
    let pid = n.crid.pid().expect("crid running");
    let mut removed = Vec::new();
    let mut warm = (0, 0);
    for i in 1..=CYCLES {
        let pod = cycle(&mut n, &format!("soak-{i}"))
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        removed.push(pod);
        if i == WARM_UP {
            warm = (fd_count(pid), rss_kb(pid));
        }
    }
    assert_eq!(leftovers(&n, &net, &removed), Leftovers::default());
    let (fds, rss) = (fd_count(pid), rss_kb(pid));
    assert_eq!(
        fds, warm.0,
        "crid's fds after {WARM_UP} cycles and after {CYCLES}"
    );
    assert!(
        rss <= warm.1 + RSS_SLACK_KB,
        "crid's RSS grew from {} kB after {WARM_UP} cycles to {rss} kB after {CYCLES}",
        warm.1
    );
}
