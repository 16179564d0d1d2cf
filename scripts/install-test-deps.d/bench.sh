#!/usr/bin/env bash
# Installs the benchmark comparators and load tools tern-bench drives (nginx with its stream module,
# haproxy, wrk, h2load from nghttp2-client, and valgrind for `--scenario callgrind`), only when
# missing. Idempotent; needs root (or
# sudo) and apt-get.
# The default test run never starts a benchmark; these are here so `tern-bench` and
# scripts/bench-smoke.sh find them on a fresh machine.
set -euo pipefail

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
