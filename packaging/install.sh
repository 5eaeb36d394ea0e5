#!/usr/bin/env bash
# Installs crid as a service on a Debian 12 node (run as root from a checkout):
#   - Debian's containerd, runc, containernetworking-plugins and iptables;
#   - crid, crid-pod-helper and crid-exec (ExecSync's native process start,
#     beside the helper; links Debian's libseccomp) into $PREFIX/bin (default /usr/local/bin), built
#     here with cargo (release) or taken from --binaries DIR;
#   - /etc/crid/config.toml from `crid --print-default-config` if none exists
#     (an existing file is never touched);
#   - a bridge CNI config if /etc/cni/net.d has none;
#   - the systemd unit /etc/systemd/system/crid.service (KillMode=process and
#     Delegate=yes: stopping or restarting crid leaves pods and helpers
#     running), enabled when systemd runs;
#   - /usr/local/sbin/crid-service, the fallback for nodes without systemd
#     (`crid-service start|stop|restart|status`).
# Options:
#   --binaries DIR   take crid, crid-pod-helper and crid-exec from DIR instead of building
#   --start          start containerd and crid now (systemctl, or crid-service)
#   --no-packages    do not apt-get anything
#   --destdir DIR    stage every file under DIR (for building a package or a
#                    dry run); implies --no-packages, never starts anything
# Undo with packaging/uninstall.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/lib.sh

binaries="" start=0 packages=1 destdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binaries) binaries="${2:?--binaries needs a directory}"; shift 2 ;;
    --start) start=1; shift ;;
    --no-packages) packages=0; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; packages=0; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -z "$destdir" ] || destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"
[ -n "$destdir" ] || [ "$(id -u)" = 0 ] || { echo "run as root (or stage with --destdir)" >&2; exit 1; }
[ -z "$destdir" ] || [ "$start" = 0 ] || { echo "--start and --destdir exclude each other" >&2; exit 2; }

bindir="$destdir/usr/local/bin"
sbindir="$destdir/usr/local/sbin"
etc="$destdir/etc"

if [ "$packages" = 1 ]; then
  pkgs=(containerd runc containernetworking-plugins iptables libseccomp2)
  [ -n "$binaries" ] || pkgs+=(protobuf-compiler libseccomp-dev)
  ensure_packages "${pkgs[@]}"
fi

if [ -z "$binaries" ]; then
  command -v cargo >/dev/null || { log "cargo (Rust toolchain) is required to build crid, or pass --binaries DIR"; exit 1; }
  log "building crid (release)"
  cargo build --release -q -p crid -p crid-pod-helper
  binaries="${CARGO_TARGET_DIR:-target}/release"
fi
for b in crid crid-pod-helper crid-exec; do
  [ -x "$binaries/$b" ] || { log "$binaries/$b is missing or not executable"; exit 1; }
done
log "installing crid, crid-pod-helper and crid-exec into $bindir"
install -d "$bindir" "$sbindir"
# Into a temp name then renamed: a running crid keeps its old executable and
# helpers started from here after the rename get the new one.
for b in crid crid-pod-helper crid-exec; do
  install -m 0755 "$binaries/$b" "$bindir/.$b.new"
  mv -f "$bindir/.$b.new" "$bindir/$b"
done
# No further names: the default handler's shim command (runtime type
# io.containerd.crid.v1) is a link <runtime_dir>/containerd-shim-crid-v1 to
# crid-pod-helper that crid makes at start and names to containerd by its
# absolute path, so nothing is needed on containerd's PATH. (uninstall.sh
# still removes a $bindir/containerd-shim-crid-v1 an older script may have
# left.)
install -m 0755 packaging/crid-service "$sbindir/crid-service"
# The unit's Documentation= points here.
install -d "$destdir/usr/share/doc/crid"
install -m 0644 README.md docs/*.md "$destdir/usr/share/doc/crid/"

install -d -m 0755 "$etc/crid"
if [ -e "$etc/crid/config.toml" ]; then
  log "keeping the existing $etc/crid/config.toml"
else
  log "writing $etc/crid/config.toml (crid's defaults; edit and restart crid)"
  "$bindir/crid" --print-default-config >"$etc/crid/config.toml.new"
  chmod 0644 "$etc/crid/config.toml.new"
  mv "$etc/crid/config.toml.new" "$etc/crid/config.toml"
fi

ensure_cni_config "$etc/cni/net.d"

install -D -m 0644 packaging/crid.service "$etc/systemd/system/crid.service"

if [ -n "$destdir" ]; then
  log "staged under $destdir"
  exit 0
fi
if have_systemd; then
  systemctl daemon-reload
  systemctl enable crid.service
  if [ "$start" = 1 ]; then
    ensure_containerd
    systemctl restart crid.service
    log "crid.service started: systemctl status crid; journalctl -u crid"
  else
    log "installed; start with: systemctl start crid"
  fi
else
  log "systemd is not running here: the unit is installed but inactive; use crid-service"
  if [ "$start" = 1 ]; then
    ensure_containerd
    "$sbindir/crid-service" restart
  else
    log "installed; start with: crid-service start (log in /var/log/crid.log)"
  fi
fi
