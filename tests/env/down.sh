#!/usr/bin/env bash
# Tears down what up.sh started and leaves nothing behind: processes, mounts,
# state. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stop_pidfile "$CRID_TEST_RUN/registry.pid"
if [ -S "$CRID_TEST_CONTAINERD_SOCK" ]; then
  # Tasks left in the shared containerd would keep shims and mounts alive.
  for ns in $(ctr --address "$CRID_TEST_CONTAINERD_SOCK" namespaces ls -q 2>/dev/null); do
    for t in $(ctr --address "$CRID_TEST_CONTAINERD_SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
      ctr --address "$CRID_TEST_CONTAINERD_SOCK" -n "$ns" tasks kill -s KILL "$t" >/dev/null 2>&1 || true
      ctr --address "$CRID_TEST_CONTAINERD_SOCK" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true
    done
  done
fi
stop_pidfile "$CRID_TEST_RUN/containerd.pid"
unmount_under "$CRID_TEST_RUN"
unmount_under "$CRID_TEST_ROOT"
rm -rf "$CRID_TEST_RUN" "$CRID_TEST_ROOT"
log "test environment removed"
