#!/usr/bin/env bash
# Installs the benchmark comparators and load tools tern-bench drives (nginx with its stream module,
# haproxy, wrk, h2load from nghttp2-client, and valgrind for `--scenario callgrind`), only when
# missing, and fortio (Istio's load tool, tern-bench's fixed-rate cross-check) with `go install`
# into $REPO/.cache/go/bin when Go is present. Idempotent; the Debian packages need root (or
# sudo) and apt-get. pingora, the slow one to build, has its own script: scripts/install-pingora.sh.
# The default test run never starts a benchmark; these are here so `tern-bench` and
# scripts/bench-smoke.sh find them on a fresh machine.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# v1.68.2: the last release without grol.io/grol, which the Go module proxy here refuses (403).
FORTIO_VERSION=v1.68.2
FORTIO="$REPO/.cache/go/bin/fortio"
if [ -x "$FORTIO" ] && "$FORTIO" version 2>/dev/null | grep -q "${FORTIO_VERSION#v}"; then
  echo "bench.sh: fortio $FORTIO_VERSION already installed"
elif ! command -v go >/dev/null 2>&1; then
  echo "bench.sh: Go is missing, so fortio is not installed (tern-bench skips its fortio cross-check)"
else
  echo "bench.sh: installing fortio $FORTIO_VERSION into $(dirname "$FORTIO")"
  mkdir -p "$(dirname "$FORTIO")"
  GOBIN="$(dirname "$FORTIO")" nice go install "fortio.org/fortio@$FORTIO_VERSION" ||
    echo "bench.sh: go install fortio.org/fortio@$FORTIO_VERSION failed (tern-bench skips its fortio cross-check)"
fi

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
# valgrind ships callgrind_control with it.
{ command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; } || missing+=(valgrind)
# Debian builds the nginx stream (TCP proxy) module as a separate package.
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "bench.sh: nginx (with stream), haproxy, wrk, h2load and valgrind already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "bench.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
