#!/usr/bin/env bash
# The systemd cgroup driver end to end: boots the systemd box
# (tests/systemd/box.sh), runs tests/tests/systemd_driver.rs inside it (each
# test starts its own containerd, registry and crid with
# cgroup_driver = "systemd"), stops the box and fails if the host changed or
# anything was left behind. Not part of tests/run.sh; run as root:
#   bash tests/systemd/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
log() { echo "[systemd-e2e] $*" >&2; }

log "build"
nice -n 5 cargo build --workspace -q
nice -n 5 cargo test -p crid-e2e --test systemd_driver --no-run -q 2>/dev/null

box=tests/systemd/box.sh
trap 'bash $box stop || true' EXIT
bash $box start
status=0
bash $box exec env PATH="$PATH" HOME="${HOME:-/root}" \
  cargo test -p crid-e2e --test systemd_driver -- --ignored --test-threads=1 || status=1
trap - EXIT
bash $box stop || status=1
[ "$status" = 0 ] && log "PASS" || log "FAIL"
exit $status
