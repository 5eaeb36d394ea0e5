#!/usr/bin/env bash
# Runs the upstream CRI validation suite (critest) against crid, as root:
#   tests/critest/run.sh [/path/to/critest] [critest args, e.g. --ginkgo.focus=REGEX]
# The critest binary (built from cri-tools' ./cmd/critest) comes from the
# first argument, else $CRITEST, else target/critest/critest, which
# tests/critest/build.sh makes from the source tree $CRI_TOOLS_SRC names.
# Without either it prints "critest: not run" and exits 0.
#
# crid-testenv does the work (tests/src/critest.rs): builds the suite's images
# from Debian's busybox and nginx packages (fetched with apt-get download into
# target/critest/debroot), pushes them to a loopback registry that crid's
# certs.d config makes the only server of every registry name, starts a
# private containerd and crid (own socket, state, CNI bridge), runs critest
# serially, prints every failure and unexpected skip (expected ones:
# tests/critest/expected-skips.txt) and `critest: N passed, N failed, N
# skipped`, and removes everything. Report and logs: target/critest/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/env/lib.sh

critest=${CRITEST:-}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  critest=$1
  shift
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "$critest" ]; then
  critest=$target/critest/critest
  # A cri-tools source tree at hand ($CRI_TOOLS_SRC): build the binary once,
  # cached under target/ (tests/critest/build.sh).
  if [ ! -x "$critest" ] && [ -n "${CRI_TOOLS_SRC:-}" ]; then
    bash tests/critest/build.sh "$CRI_TOOLS_SRC"
  fi
fi
if [ ! -x "$critest" ]; then
  echo "critest: not run (no binary; set CRITEST=/path/to/critest)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "tests/critest/run.sh must run as root (it runs containers)" >&2; exit 1; }
install_packages

# Debian's dynamic busybox (its shell execs programs, as upstream busybox's
# does) and nginx, unpacked, never installed.
debroot=$target/critest/debroot
if [ ! -x "$debroot/bin/busybox" ] || [ ! -x "$debroot/usr/sbin/nginx" ]; then
  debs=$(mktemp -d)
  trap 'rm -rf "$debs"' EXIT
  if ! (cd "$debs" && apt-get download -q busybox nginx >/dev/null 2>&1); then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    (cd "$debs" && apt-get download -q busybox nginx >/dev/null)
  fi
  rm -rf "$debroot"
  mkdir -p "$debroot"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$debroot"; done
  log "unpacked busybox and nginx into $debroot"
fi

cargo build -q -p crid -p crid-pod-helper -p crid-e2e --bin crid-testenv
out=$target/critest/out
CRID_BIN_DIR=$target/debug "$target/debug/crid-testenv" critest "$critest" "$debroot" \
  tests/critest/expected-skips.txt "$out" "$@"
