#!/usr/bin/env bash
# Sets up a Debian 12 node as root and runs crid in the foreground on its
# defaults: installs Debian's containerd, runc and CNI plugins, starts the
# system containerd if nothing answers on /run/containerd/containerd.sock,
# builds and installs crid and crid-pod-helper into /usr/local/bin, writes a
# default bridge CNI config only if /etc/cni/net.d has none, then runs crid.
# Extra arguments go to crid (e.g. --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
log() { echo "[crid-setup] $*" >&2; }

packages="containerd runc containernetworking-plugins iptables protobuf-compiler"
missing=()
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

sock=/run/containerd/containerd.sock
if ! ctr --address "$sock" version >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    log "starting containerd.service"
    systemctl enable --now containerd
  else
    log "starting containerd (no systemd; log in /var/log/containerd.log)"
    setsid containerd >>/var/log/containerd.log 2>&1 < /dev/null &
  fi
  for i in $(seq 100); do
    ctr --address "$sock" version >/dev/null 2>&1 && break
    [ "$i" = 100 ] && { log "containerd did not come up; see /var/log/containerd.log"; exit 1; }
    sleep 0.1
  done
fi

command -v cargo >/dev/null || { log "cargo (Rust toolchain) is required to build crid"; exit 1; }
log "building crid (release)"
cargo build --release -q -p crid -p crid-pod-helper
target="${CARGO_TARGET_DIR:-target}/release"
install -m 0755 "$target/crid" "$target/crid-pod-helper" /usr/local/bin/

mkdir -p /etc/cni/net.d
if ! compgen -G '/etc/cni/net.d/*.conf*' >/dev/null && ! compgen -G '/etc/cni/net.d/*.json' >/dev/null; then
  log "no CNI config found; writing /etc/cni/net.d/10-crid-bridge.conflist (bridge crid0, 10.88.0.0/16)"
  cat > /etc/cni/net.d/10-crid-bridge.conflist <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "crid-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "crid0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
fi

log "running crid on its defaults (socket /run/crid/crid.sock)"
exec /usr/local/bin/crid "$@"
