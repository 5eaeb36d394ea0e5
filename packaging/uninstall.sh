#!/usr/bin/env bash
# Undoes packaging/install.sh: stops crid (systemd or crid-service), removes
# the unit, the binaries and crid-service. Kept unless asked: pods (stop them
# through the kubelet or crictl first: their helpers outlive crid by design),
# /etc/crid (--purge-config), crid's state in /var/lib/crid and /run/crid
# (--purge-state, refused while a pod helper still runs), the CNI config, and
# the Debian packages.
# Options: --destdir DIR (as given to install.sh), --purge-config, --purge-state.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/lib.sh

destdir="" purge_config=0 purge_state=0
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --purge-config) purge_config=1; shift ;;
    --purge-state) purge_state=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$destdir" ] || [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
bindir="$destdir/usr/local/bin"
sbindir="$destdir/usr/local/sbin"
etc="$destdir/etc"
unit="$etc/systemd/system/crid.service"

if [ -z "$destdir" ]; then
  if have_systemd && systemctl cat crid.service >/dev/null 2>&1; then
    systemctl disable --now crid.service || true
  fi
  if [ -x "$sbindir/crid-service" ]; then
    "$sbindir/crid-service" stop
  fi
fi

if [ "$purge_state" = 1 ] && [ -z "$destdir" ]; then
  # Never pull the state from under a live pod: its helper still uses it.
  helpers="$(pgrep -x crid-pod-helper || true)"
  if [ -n "$helpers" ]; then
    log "pod helpers still run (pids: $(echo $helpers)); stop the pods first, state kept"
    purge_state=0
  fi
fi

rm -f "$unit"
[ -z "$destdir" ] && have_systemd && systemctl daemon-reload
# The names install.sh creates (see its list of further names).
rm -f "$bindir/crid" "$bindir/crid-pod-helper" "$bindir/crid-exec" "$bindir/containerd-shim-crid-v1" "$sbindir/crid-service"
rm -rf "$destdir/usr/share/doc/crid"

if [ "$purge_config" = 1 ]; then
  rm -rf "$etc/crid"
  log "removed $etc/crid"
fi
if [ "$purge_state" = 1 ]; then
  rm -rf "$destdir/var/lib/crid" "$destdir/run/crid"
  log "removed crid's state ($destdir/var/lib/crid, $destdir/run/crid)"
fi
log "crid uninstalled (containerd, runc, the CNI plugins and $etc/cni/net.d are left as they are)"
