#!/usr/bin/env bash
# Runs a real kubelet standalone (no API server, static pods) on crid, as root:
#   tests/kubelet/run.sh [/path/to/kubelet]
# $KUBELET_FEATURE_GATES (e.g. PodAndContainerStatsFromCRI=true) adds kubelet
# feature gates to EventedPLEG=true. The kubelet binary (built from the kubernetes source's ./cmd/kubelet; this
# repo does not build it) comes from the first argument, else $KUBELET.
# Without one it prints "kubelet: not run" and exits 0 (tests/run.sh calls
# it; CI has no kubelet).
#
# crid-testenv does the work (tests/src/kubelet.rs): a loopback registry
# with a busybox-static image, a private containerd, crid on its own socket
# and CNI bridge, the kubelet (cgroupfs, EventedPLEG=true, failSwapOn false,
# root dir under a temp dir, every port on 127.0.0.1, in a private mount
# namespace that shows it the kernel tunables it wants so it never writes
# the host's), a pod with two probed containers and a crash-looping pod;
# then checks /pods, /containerLogs, /stats/summary, /metrics/cadvisor and
# the evented PLEG, restarts crid under the pods and checks again, removes
# everything and prints `kubelet: N passed, N failed`. Logs:
# target/kubelet/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/env/lib.sh

kubelet=${1:-${KUBELET:-}}
if [ -z "$kubelet" ]; then
  echo "kubelet: not run (no binary; set KUBELET=/path/to/kubelet)"
  exit 0
fi
[ -x "$kubelet" ] || { echo "kubelet: $kubelet is not an executable" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "tests/kubelet/run.sh must run as root (it runs containers)" >&2; exit 1; }
install_packages

target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q -p crid -p crid-pod-helper -p crid-e2e --bin crid-testenv
"$kubelet" --version
CRID_BIN_DIR=$target/debug "$target/debug/crid-testenv" kubelet "$(realpath "$kubelet")" "$target/kubelet/out" "${KUBELET_FEATURE_GATES:-}"
