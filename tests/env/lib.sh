# Shared settings of the test environment scripts (sourced, not run).
CRID_TEST_ROOT=${CRID_TEST_ROOT:-/var/lib/crid-test}
CRID_TEST_RUN=${CRID_TEST_RUN:-/run/crid-test}
CRID_TEST_REGISTRY=${CRID_TEST_REGISTRY:-127.0.0.1:5000}
CRID_TEST_CONTAINERD_SOCK="$CRID_TEST_RUN/containerd/containerd.sock"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages the tests and crid need at run time. Go and spdystream are
# for the interop test against the SPDY library kubectl itself uses; openssl
# makes the streaming TLS test's certificates; gcc and libc6-dev build the static
# syscall probe of the security_seccomp suite.
CRID_TEST_PACKAGES="containerd runc containernetworking-plugins protobuf-compiler docker-registry busybox-static iptables iproute2 apache2-utils procps curl openssl golang-go golang-github-docker-spdystream-dev gcc libc6-dev libseccomp-dev"

log() { echo "[crid-env] $*" >&2; }

# Installs what is missing; apt-get update only when something is.
install_packages() {
  local missing=()
  for p in $CRID_TEST_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    # Package scripts must not start services (e.g. a registry on :5000) on their own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

# True if the process in pid file $1 is alive.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# SIGTERM the process in pid file $1, SIGKILL after 5 s; removes the file.
stop_pidfile() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Detaches every mount at or below $1, deepest first.
unmount_under() {
  local dir=$1
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
