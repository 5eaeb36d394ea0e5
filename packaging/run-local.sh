#!/usr/bin/env bash
# Sets up a Debian 12 node as root and runs crid in the foreground on its
# defaults: installs Debian's containerd, runc and CNI plugins, starts the
# system containerd if nothing answers on /run/containerd/containerd.sock,
# builds and installs crid and crid-pod-helper into /usr/local/bin, writes a
# default bridge CNI config only if /etc/cni/net.d has none, then runs crid.
# Extra arguments go to crid (e.g. --log-level debug).
# For a service that outlives the shell, use packaging/install.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/lib.sh

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

ensure_packages containerd runc containernetworking-plugins iptables protobuf-compiler
ensure_containerd

command -v cargo >/dev/null || { log "cargo (Rust toolchain) is required to build crid"; exit 1; }
log "building crid (release)"
cargo build --release -q -p crid -p crid-pod-helper
target="${CARGO_TARGET_DIR:-target}/release"
install -m 0755 "$target/crid" "$target/crid-pod-helper" "$target/crid-exec" /usr/local/bin/

ensure_cni_config /etc/cni/net.d

log "running crid on its defaults (socket /run/crid/crid.sock)"
exec /usr/local/bin/crid "$@"
