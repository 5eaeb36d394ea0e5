#!/usr/bin/env bash
# A throw-away systemd for the systemd cgroup driver's end-to-end test:
# Debian's systemd 252 as PID 1 of its own mount, PID, cgroup, network, UTS
# and IPC namespaces, booting only crid-box.target (a D-Bus system bus and
# nothing else: no host unit is loaded, SYSTEMD_UNIT_PATH names only ours).
#
#   box.sh start          boots the box; returns once systemd answers on D-Bus
#   box.sh exec CMD...    runs CMD in the box (all its namespaces, its cgroup)
#   box.sh stop           kills the box and fails if anything is left behind
#
# The host is left as it was: the box's cgroups are children of the caller's
# own cgroups (removed on stop), its mounts live and die in its mount
# namespace (private propagation), /run and /var/lib/systemd are its own
# tmpfs, and the global sysctls PID 1 raises at boot (fs.file-max,
# fs.nr_open) are bind-mounted files in the box. `stop` compares sysctls,
# hostname, network links, kernel modules and mounts with their state at
# `start`.
set -euo pipefail
STATE=${CRID_BOX_STATE:-/var/tmp/crid-sysbox}
CG_NAME=crid-sysbox
log() { echo "[box] $*" >&2; }

# The v1 hierarchies ("cpu", "memory", "systemd" for name=systemd...) and
# "unified" (cgroup2), as mounted under /sys/fs/cgroup.
hierarchies() {
  awk '$9 == "cgroup" || $9 == "cgroup2" { sub("/sys/fs/cgroup/", "", $5); print $5 }' /proc/self/mountinfo
}

# The box's cgroup directory in hierarchy $1 (a child of our own cgroup).
box_cgroup() {
  local h=$1 key own
  case $h in
    unified) key="" ;;
    systemd) key="name=systemd" ;;
    *) key=$h ;;
  esac
  own=$(awk -F: -v k="$key" '$2 == k { print $3 }' /proc/self/cgroup)
  own=${own%/$CG_NAME}
  echo "/sys/fs/cgroup/$h${own%/}/$CG_NAME"
}

pid1() { cat "$STATE/pid1"; }

# What must be the same after the box is gone.
snapshot() {
  {
    echo "## hostname $(hostname)"
    # Other crid tests on this host add and remove pods' veths and bridges
    # and mount containers' rootfs meanwhile: those are not the box's.
    echo "## links"; ip -o link show | sed 's/qlen [0-9]*//' | grep -Ev '^[0-9]+: (veth|crid-|cni)'
    echo "## modules"; awk '{print $1}' /proc/modules | sort
    echo "## mounts"; awk '{print $5, $9}' /proc/self/mountinfo | sort \
      | grep -Ev '^/(var/tmp/crid-test|run/crid|var/lib/crid|run/netns|run/containerd|tmp/)'
    echo "## sysctls"
    # Counters and randomness change by themselves.
    { find /proc/sys -type f -perm -u=r 2>/dev/null || true; } \
      | grep -Ev 'random/(entropy_avail|uuid|boot_id)|fs/(dentry|inode|file)-(state|nr)|fs/aio-nr|kernel/ns_last_pid|kernel/tainted|fs/quota|net/netfilter/nf_conntrack_count|vm/stat_refresh|fs/binfmt_misc' \
      | grep -Ev '/net/ipv[46]/(conf|neigh)/(veth|crid-|cni)' | sort | while read -r f; do printf '%s=%s\n' "$f" "$(tr '\n' ' ' <"$f" 2>/dev/null)"; done
  } >"$1" 2>/dev/null || true
}

start() {
  [ ! -e "$STATE/pid1" ] || { log "a box is already running ($STATE)"; exit 1; }
  command -v /lib/systemd/systemd >/dev/null || { log "/lib/systemd/systemd is missing"; exit 1; }
  mkdir -p "$STATE/units"
  snapshot "$STATE/host.before"

  # Only our units: the box's target, and D-Bus (socket-activated).
  cat >"$STATE/units/crid-box.target" <<'EOF'
[Unit]
Description=crid systemd box
Wants=dbus.socket
EOF
  cat >"$STATE/units/dbus.socket" <<'EOF'
[Unit]
Description=D-Bus System Message Bus Socket
DefaultDependencies=no
[Socket]
ListenStream=/run/dbus/system_bus_socket
EOF
  cat >"$STATE/units/dbus.service" <<'EOF'
[Unit]
Description=D-Bus System Message Bus
Requires=dbus.socket
DefaultDependencies=no
[Service]
ExecStart=/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
ExecReload=/usr/bin/dbus-send --print-reply --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig
StandardOutput=null
EOF
  echo 0 >"$STATE/file-max"; cat /proc/sys/fs/file-max >"$STATE/file-max"
  cat /proc/sys/fs/nr_open >"$STATE/nr_open"

  # The box's cgroups: one child of our own cgroup per hierarchy.
  local h d
  for h in $(hierarchies); do
    d=$(box_cgroup "$h")
    mkdir -p "$d"
    if [ "$h" = cpuset ]; then
      cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
    fi
    echo "$d" >>"$STATE/cgroups"
  done

  # The box's PID 1 (after unshare's fork): cgroups joined before the cgroup
  # namespace is made, so the namespace's root is the box's cgroup.
  cat >"$STATE/init.sh" <<'EOF'
set -eu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
for h in $BOX_HIERARCHIES; do
  mkdir -p /sys/fs/cgroup/$h
  case $h in
    unified) mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified ;;
    systemd) mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd ;;
    *) mount -t cgroup -o "$h" cgroup /sys/fs/cgroup/$h ;;
  esac
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /var/lib/systemd
# Global sysctls PID 1 raises at boot write to box-private files.
mount --bind "$BOX_STATE/file-max" /proc/sys/fs/file-max
mount --bind "$BOX_STATE/nr_open" /proc/sys/fs/nr_open
# PID 1 logs to /dev/console: the box's log file instead of the host's.
mount --bind "$BOX_STATE/systemd.log" /dev/console
hostname crid-sysbox
export container=crid-sysbox SYSTEMD_UNIT_PATH="$BOX_STATE/units"
exec /lib/systemd/systemd --unit=crid-box.target --log-target=console --log-level=info
EOF
  # The sub-shell joins the box's cgroups, then becomes unshare (and, after
  # its fork, PID 1). Modules and the clock are not systemd's to touch here.
  (
    for d in $(cat "$STATE/cgroups"); do echo $BASHPID >"$d/cgroup.procs"; done
    BOX_HIERARCHIES="$(hierarchies | tr '\n' ' ')" BOX_STATE="$STATE" \
      exec setsid unshare --mount --pid --cgroup --net --uts --ipc --fork --propagation private \
      setpriv --bounding-set -sys_module,-sys_time,-sys_boot --inh-caps -sys_module,-sys_time,-sys_boot \
      sh "$STATE/init.sh" </dev/null >"$STATE/systemd.log" 2>&1
  ) &
  echo $! >"$STATE/unshare"
  local i p=""
  for i in $(seq 100); do
    # Only once the sub-shell is unshare: before, its children are the
    # sub-shell's own commands.
    if [ "$(cat "/proc/$(cat "$STATE/unshare")/comm" 2>/dev/null)" = unshare ]; then
      p=$(cat "/proc/$(cat "$STATE/unshare")/task/"*/children 2>/dev/null | awk '{print $1}') || true
      [ -n "$p" ] && break
    fi
    sleep 0.05
  done
  [ -n "$p" ] || { log "the box did not start"; cat "$STATE/systemd.log" >&2; stop; exit 1; }
  echo "$p" >"$STATE/pid1"
  for i in $(seq 300); do
    if nsenter -t "$p" -a busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
      org.freedesktop.DBus.Peer Ping >/dev/null 2>&1; then
      log "systemd $(nsenter -t "$p" -a systemctl --version | awk 'NR==1{print $2}') is PID 1 of the box (host pid $p), D-Bus up"
      return 0
    fi
    sleep 0.1
  done
  log "systemd did not answer on D-Bus in 30 s"; tail -30 "$STATE/systemd.log" >&2
  stop || true
  exit 1
}

# Runs "$@" in the box: the caller joins the box's root cgroups first (a
# process outside a cgroup namespace's root cannot be moved into it from
# inside), then enters every namespace of PID 1.
exec_in() {
  local d
  for d in $(cat "$STATE/cgroups"); do echo $$ >"$d/cgroup.procs"; done
  exec nsenter -t "$(pid1)" -a --wd="$PWD" "$@"
}

stop() {
  local fail=0 u d i
  [ -d "$STATE" ] || return 0
  if [ -f "$STATE/unshare" ]; then
    u=$(cat "$STATE/unshare")
    # SIGKILL to a PID namespace's init kills all of the namespace.
    [ -f "$STATE/pid1" ] && kill -KILL "$(pid1)" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$u" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$u" 2>/dev/null && { log "LEAK: unshare $u still alive"; fail=1; }
  fi
  # Cgroups: every process gone, then every directory, deepest first.
  if [ -f "$STATE/cgroups" ]; then
    for d in $(cat "$STATE/cgroups"); do
      for i in $(seq 50); do
        [ -z "$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
        sleep 0.1
      done
      if [ -n "$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; then
        log "LEAK: processes still in $d"; fail=1
      fi
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      if [ -d "$d" ]; then log "LEAK: cgroup $d not removable"; fail=1; fi
    done
  fi
  if [ -f "$STATE/host.before" ]; then
    snapshot "$STATE/host.after"
    if ! diff -u "$STATE/host.before" "$STATE/host.after" >"$STATE/host.diff"; then
      log "LEAK: the host changed:"; cat "$STATE/host.diff" >&2; fail=1
    elif [ "$fail" = 0 ]; then
      log "host unchanged: sysctls, hostname, links, modules, mounts; no box process or cgroup left"
    fi
  fi
  [ "$fail" = 0 ] || { log "box state kept in $STATE"; return 1; }
  rm -rf "$STATE"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  exec) shift; exec_in "$@" ;;
  *) echo "usage: $0 start|stop|exec CMD..." >&2; exit 2 ;;
esac
