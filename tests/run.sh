#!/usr/bin/env bash
# Runs every test of crid on a Debian 12 machine as root: installs what is
# missing, checks formatting and lints, builds, brings the test environment up
# (tests/env/up.sh), runs unit and end-to-end tests against real containerd,
# runc, CNI plugins and a local registry, runs the CRI validation suite
# (tests/critest/run.sh) when a critest binary is available ($CRITEST or
# target/critest/critest) and a real kubelet on crid (tests/kubelet/run.sh)
# when $KUBELET names a kubelet binary, tears the environment down and fails if anything
# leaked (mounts, network namespaces, helper processes, test dirs).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/env/lib.sh

[ "$(id -u)" = 0 ] || { echo "tests/run.sh must run as root (it runs containers)" >&2; exit 1; }
install_packages
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
log "build"
cargo build --workspace --all-targets -q

trap 'bash tests/env/down.sh' EXIT
bash tests/env/up.sh

log "cargo test"
# Each e2e test starts its own containerd; two at a time fits 2 cores.
results=$(mktemp)
# --no-fail-fast: every suite runs and the count below is complete even when
# one fails; the script still fails at the end.
status=0
cargo test --workspace --no-fail-fast -- --test-threads="${CRID_TEST_THREADS:-2}" 2>&1 \
  | tee "$results" || status=1
log "interop: our SPDY/3.1 server against Go's spdystream (kubectl's library)"
cargo test -p crid-pod-helper -- --ignored spdystream 2>&1 | tee -a "$results" || status=1
log "critest: the CRI validation suite, where a critest binary is available"
bash tests/critest/run.sh || status=1
log "kubelet: a real kubelet on crid, where \$KUBELET names one"
bash tests/kubelet/run.sh || status=1
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$results")
rm -f "$results"

trap - EXIT
bash tests/env/down.sh
echo "crid: $passed passed, $failed failed"
[ "$status" = 0 ] || { log "tests failed"; exit 1; }

# Leftovers mean a test did not clean up after itself.
leaks=0
if grep -E '/run/crid|crid-test|/var/lib/crid' /proc/self/mountinfo; then
  log "LEAK: mounts above are still mounted"; leaks=1
fi
if [ -n "$(ip netns list 2>/dev/null)" ]; then
  ip netns list; log "LEAK: network namespaces"; leaks=1
fi
if pgrep -a -x crid-pod-helper; then
  log "LEAK: crid-pod-helper processes"; leaks=1
fi
cgroups=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d \( -name 'crid' -o -name 'crid-*' \) 2>/dev/null)
if [ -n "$cgroups" ]; then
  echo "$cgroups"; log "LEAK: cgroups"; leaks=1
fi
if compgen -G '/var/tmp/crid-test-*' >/dev/null; then
  ls -d /var/tmp/crid-test-*; log "LEAK: test directories"; leaks=1
fi
[ "$leaks" = 0 ] || exit 1
log "all tests passed, nothing leaked"
