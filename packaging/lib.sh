# Shell functions shared by run-local.sh and install.sh (sourced, not run).
# Each is idempotent: it changes nothing that is already in place.

log() { echo "[crid-setup] $*" >&2; }

# Whether systemd is the running init (the test systemd itself uses).
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# Installs the Debian packages named in "$@" that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Starts the system containerd unless something answers on its socket:
# through systemd when it runs, else detached with its log in
# /var/log/containerd.log.
ensure_containerd() {
  local sock=/run/containerd/containerd.sock i
  ctr --address "$sock" version >/dev/null 2>&1 && return 0
  if have_systemd; then
    log "starting containerd.service"
    systemctl enable --now containerd
  else
    log "starting containerd (no systemd; log in /var/log/containerd.log)"
    setsid containerd >>/var/log/containerd.log 2>&1 </dev/null &
  fi
  for i in $(seq 100); do
    ctr --address "$sock" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "containerd did not come up; see /var/log/containerd.log or journalctl -u containerd"
  return 1
}

# Writes a bridge CNI config into directory $1 unless it already holds a
# config (.conf, .conflist or .json): a node's own network is never replaced.
ensure_cni_config() {
  local dir="$1"
  mkdir -p "$dir"
  if compgen -G "$dir/*.conf*" >/dev/null || compgen -G "$dir/*.json" >/dev/null; then
    return 0
  fi
  log "no CNI config found; writing $dir/10-crid-bridge.conflist (bridge crid0, 10.88.0.0/16)"
  cat >"$dir/10-crid-bridge.conflist" <<'JSON'
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
}
