#!/usr/bin/env bash
# Sets up the shared test environment, idempotently, on a Debian 12 machine as
# root: Debian packages, a private containerd (own root, state and socket —
# never the system one), a registry on 127.0.0.1 only, and the shared test
# images pushed to it. The e2e tests start their own containerd per test; this
# one serves benchmarks and manual debugging (`ctr --address ...`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
install_packages

mkdir -p "$CRID_TEST_ROOT" "$CRID_TEST_RUN/containerd"

# Private containerd.
if ! pid_alive "$CRID_TEST_RUN/containerd.pid"; then
  cat > "$CRID_TEST_RUN/containerd/config.toml" <<TOML
version = 2
root = "$CRID_TEST_ROOT/containerd"
state = "$CRID_TEST_RUN/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CRID_TEST_CONTAINERD_SOCK"
[ttrpc]
  address = "$CRID_TEST_CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CRID_TEST_ROOT/containerd-opt"
TOML
  setsid containerd --config "$CRID_TEST_RUN/containerd/config.toml" \
    >"$CRID_TEST_RUN/containerd.log" 2>&1 < /dev/null &
  echo $! > "$CRID_TEST_RUN/containerd.pid"
  log "private containerd started on $CRID_TEST_CONTAINERD_SOCK"
fi

# Registry on loopback only.
if ! pid_alive "$CRID_TEST_RUN/registry.pid"; then
  mkdir -p "$CRID_TEST_ROOT/registry"
  cat > "$CRID_TEST_RUN/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $CRID_TEST_ROOT/registry
  delete:
    enabled: true
http:
  addr: $CRID_TEST_REGISTRY
YML
  setsid docker-registry serve "$CRID_TEST_RUN/registry.yml" \
    >"$CRID_TEST_RUN/registry.log" 2>&1 < /dev/null &
  echo $! > "$CRID_TEST_RUN/registry.pid"
  log "registry started on $CRID_TEST_REGISTRY"
fi

for i in $(seq 100); do
  if [ -S "$CRID_TEST_CONTAINERD_SOCK" ] && ctr --address "$CRID_TEST_CONTAINERD_SOCK" version >/dev/null 2>&1 \
     && curl -fsS "http://$CRID_TEST_REGISTRY/v2/" >/dev/null 2>&1; then
    break
  fi
  [ "$i" = 100 ] && { log "containerd or registry did not come up"; tail -5 "$CRID_TEST_RUN"/*.log; exit 1; }
  sleep 0.1
done

# Shared test images (built from busybox-static by the harness's image builder).
testenv="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/crid-testenv"
if [ ! -x "$testenv" ]; then
  (cd "$REPO_ROOT" && cargo build -q -p crid-e2e --bin crid-testenv)
fi
"$testenv" push-images "$CRID_TEST_REGISTRY" >&2

cat > "$CRID_TEST_RUN/env" <<ENV
CRID_TEST_REGISTRY=$CRID_TEST_REGISTRY
CRID_TEST_CONTAINERD_SOCK=$CRID_TEST_CONTAINERD_SOCK
ENV
log "ready: registry $CRID_TEST_REGISTRY, containerd $CRID_TEST_CONTAINERD_SOCK"
