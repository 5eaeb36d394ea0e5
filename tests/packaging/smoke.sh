#!/usr/bin/env bash
# Exercises packaging/ for real without touching the node's own install:
# install.sh --destdir stages everything under a temp root; the staged unit
# is checked with `systemd-analyze verify`; then the no-systemd path runs:
# a private containerd, crid started by the staged crid-service on a private
# socket/state/runtime dir, a host-network pod with a container (crictl), a
# crid-service restart (the pod's helper and container must survive and crid
# must re-adopt them), `crid debug pods`, cleanup and uninstall.sh --destdir.
# Needs root, the built binaries (BIN_DIR, default target/debug), crictl
# (CRICTL, default crictl on PATH) and an image (IMAGE, default the test
# env's 127.0.0.1:5000/crid-test/busybox:latest from tests/env/up.sh).
set -euo pipefail
[ -z "${SMOKE_TRACE:-}" ] || set -x
cd "$(dirname "$0")/../.."
bin_dir="${BIN_DIR:-target/debug}"
crictl_bin="${CRICTL:-crictl}"
image="${IMAGE:-127.0.0.1:5000/crid-test/busybox:latest}"
command -v "$crictl_bin" >/dev/null || { echo "packaging smoke: no crictl (set CRICTL)" >&2; exit 1; }

work="$(mktemp -d /var/tmp/crid-pkg-XXXXXX)"
root="$work/root"
ctrd_pid=""
pod=""
# Pids of processes this run started (crid, pod helpers, shims, containerd):
# their command line or executable names the work dir.
ours() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$work" ||
      readlink "$p/exe" 2>/dev/null | grep -qF "$work"; then
      echo "${p#/proc/}"
    fi
  done
}
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ] && [ -e "$work/crid.log" ]; then
    echo "--- crid log (last 30 lines)"; tail -n 30 "$work/crid.log"
  fi
  # A run cut between runp and rmp: the pod is removed through crid, as an
  # operator would (crid is started again if a failed step left it down), so
  # its helper, container, netns and cgroups go the normal way.
  if [ -n "$pod" ] && [ -n "${CRID_SERVICE:-}" ]; then
    "$CRID_SERVICE" status >/dev/null 2>&1 || "$CRID_SERVICE" start >/dev/null 2>&1
    crictl stopp "$pod" >/dev/null 2>&1
    crictl rmp -f "$pod" >/dev/null 2>&1
  fi
  [ -n "${CRID_SERVICE:-}" ] && "$CRID_SERVICE" stop >/dev/null
  if [ -n "$ctrd_pid" ]; then kill "$ctrd_pid"; wait "$ctrd_pid" 2>/dev/null; fi
  # Whatever that could not remove (crid never came up again, say).
  local left
  left=$(ours)
  if [ -n "$left" ]; then
    echo "packaging smoke: killing leftover processes: $left" >&2
    kill -9 $left 2>/dev/null
    sleep 0.5
  fi
  grep " $work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  if [ -n "$pod" ]; then # the pod's cgroups, deepest first, in every hierarchy
    find /sys/fs/cgroup -depth -type d -path "*$pod*" -exec rmdir {} \; 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "== $*"; }

step "install.sh --destdir"
bash packaging/install.sh --destdir "$root" --binaries "$bin_dir"
for f in usr/local/bin/crid usr/local/bin/crid-pod-helper usr/local/bin/crid-exec usr/local/sbin/crid-service \
  etc/crid/config.toml etc/cni/net.d/10-crid-bridge.conflist etc/systemd/system/crid.service; do
  [ -e "$root/$f" ] || { echo "missing $f" >&2; exit 1; }
done
# The default config is crid's own default, and crid accepts it.
diff <("$root/usr/local/bin/crid" --print-default-config) "$root/etc/crid/config.toml"
"$root/usr/local/bin/crid" --config "$root/etc/crid/config.toml" debug config >/dev/null
# A second run keeps an edited config and CNI config.
echo '# edited' >>"$root/etc/crid/config.toml"
bash packaging/install.sh --destdir "$root" --binaries "$bin_dir" 2>/dev/null
grep -q '^# edited' "$root/etc/crid/config.toml"

step "systemd-analyze verify (ExecStart pointed at the staged binary)"
grep -qx 'KillMode=process' "$root/etc/systemd/system/crid.service"
grep -qx 'Delegate=yes' "$root/etc/systemd/system/crid.service"
sed "s#^ExecStart=/usr/local/bin/#ExecStart=$root/usr/local/bin/#" \
  "$root/etc/systemd/system/crid.service" >"$work/crid.service"
systemd-analyze verify "$work/crid.service"

step "private containerd"
mkdir -p "$work/ctrd"
cat >"$work/ctrd/config.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/ctrd/containerd.sock"
[ttrpc]
  address = "$work/ctrd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/ctrd/opt"
TOML
containerd --config "$work/ctrd/config.toml" >"$work/ctrd/log" 2>&1 &
ctrd_pid=$!
for i in $(seq 100); do ctr --address "$work/ctrd/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

step "crid-service start (no systemd)"
cat >"$work/crid.toml" <<TOML
socket = "$work/crid.sock"
state_dir = "$work/state"
runtime_dir = "$work/run"
[containerd]
address = "$work/ctrd/containerd.sock"
[cni]
conf_dir = "$work/no-cni"
TOML
export CRID_BIN="$root/usr/local/bin/crid" CRID_ARGS="--config $work/crid.toml"
export CRID_PIDFILE="$work/crid.pid" CRID_LOG="$work/crid.log"
CRID_SERVICE="$root/usr/local/sbin/crid-service"
"$CRID_SERVICE" start
"$CRID_SERVICE" status
: >"$work/crictl.yaml"
crictl() { "$crictl_bin" --config "$work/crictl.yaml" --runtime-endpoint "unix://$work/crid.sock" --image-endpoint "unix://$work/crid.sock" --timeout 30s "$@"; }
crictl version

step "a pod and a container"
crictl pull "$image" >/dev/null
cat >"$work/pod.json" <<JSON
{"metadata": {"name": "pkg-smoke", "namespace": "default", "uid": "pkg-smoke-uid"},
 "log_directory": "$work/logs",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
cat >"$work/ctr.json" <<JSON
{"metadata": {"name": "sleeper"}, "image": {"image": "$image"},
 "command": ["/bin/sh", "-c", "echo started; exec sleep 1000"], "log_path": "sleeper.log"}
JSON
pod="$(crictl runp "$work/pod.json")"
ctr="$(crictl create "$pod" "$work/ctr.json" "$work/pod.json")"
crictl start "$ctr" >/dev/null
tmpl() { crictl "$1" -o go-template --template "$2" "${@:3}"; }
helper="$(tmpl inspectp '{{.info.pid}}' "$pod")"
[ "$(cat "/proc/$helper/comm")" = crid-pod-helper ] || { echo "inspectp info.pid $helper is no pod helper" >&2; exit 1; }
echo "pod $pod, container $ctr, helper pid $helper"

step "crictl inspect / inspectp / info keys"
ctr_pid="$(tmpl inspect '{{.info.pid}}' "$ctr")"
[ "$(tmpl inspect '{{.info.sandboxID}}' "$ctr")" = "$pod" ]
# The shipped default handler: the pod helper is the pod's shim.
[ "$(tmpl inspect '{{.info.runtimeType}}' "$ctr")" = io.containerd.crid.v1 ]
[ "$(tmpl inspect '{{.info.config.metadata.name}}' "$ctr")" = sleeper ]
[ "$(tmpl inspect '{{.info.runtimeSpec.process.args}}' "$ctr")" = "[/bin/sh -c echo started; exec sleep 1000]" ]
# The shell exec'd sleep: info.pid is the container process.
[ "$(tr '\0' ' ' <"/proc/$ctr_pid/cmdline")" = "sleep 1000 " ]
[ "$(tmpl inspectp '{{.info.processStatus}}' "$pod")" = running ]
[ "$(tmpl inspectp '{{.info.config.metadata.name}}' "$pod")" = pkg-smoke ]
[ "$(tmpl inspectp '{{.info.netNamespaceClosed}}' "$pod")" = false ]
tmpl info '{{.lastCNILoadStatus}}' | grep -q "cni config load failed"
[ "$(tmpl info '{{.cniconfig.PluginConfDir}}')" = "$work/no-cni" ]
echo "container pid $ctr_pid; inspect, inspectp and info keys as containerd's"

step "crid-service restart: pod and helper survive, crid re-adopts them"
"$CRID_SERVICE" stop
kill -0 "$helper"
"$CRID_BIN" $CRID_ARGS debug pods
"$CRID_SERVICE" start
kill -0 "$helper"
crictl pods --id "$pod" | grep -q Ready
crictl ps --id "$ctr" | grep -q Running
"$CRID_BIN" $CRID_ARGS debug pods --json | grep -q '"helper_in_pod_cgroup": true'

step "cleanup and uninstall.sh --destdir"
crictl stopp "$pod" >/dev/null
crictl rmp "$pod" >/dev/null
"$CRID_SERVICE" stop
CRID_SERVICE=""
bash packaging/uninstall.sh --destdir "$root" --purge-config
[ ! -e "$root/usr/local/bin/crid" ] && [ ! -e "$root/etc/crid" ] && [ ! -e "$root/etc/systemd/system/crid.service" ]
echo "packaging smoke: ok"
