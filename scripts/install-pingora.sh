#!/usr/bin/env bash
# Builds tern-bench's pingora comparator (bench/pingora-proxy: pingora 0.9.1's reverse-proxy
# example in front of one upstream, its own Cargo.lock, outside the workspace) with `nice` into
# $REPO/.cache/bin/pingora-proxy, only when it is missing or older than its sources. Needs cargo
# and cmake (pingora's zlib-ng runs cmake); without them it says so in one line and exits 0, and
# tern-bench reports pingora as skipped. The first build takes minutes on two cores. Not called
# by scripts/install-test-deps.sh or scripts/test.sh: no test needs it, and --quick leaves
# pingora out.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/bench/pingora-proxy"
BIN="$REPO/.cache/bin/pingora-proxy"

if [ -x "$BIN" ] && [ -z "$(find "$SRC/src" "$SRC/Cargo.toml" "$SRC/Cargo.lock" -newer "$BIN")" ]; then
  echo "install-pingora.sh: pingora-proxy is up to date ($BIN)"
  exit 0
fi
for tool in cargo cmake; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-pingora.sh: $tool is missing, so pingora-proxy is not built (tern-bench skips pingora)"
    exit 0
  fi
done
echo "install-pingora.sh: building pingora-proxy (pingora 0.9.1) into $BIN"
mkdir -p "$(dirname "$BIN")"
(cd "$SRC" && CARGO_TARGET_DIR="$REPO/.cache/pingora-target" nice cargo build --release --locked)
cp "$REPO/.cache/pingora-target/release/pingora-proxy" "$BIN.new"
mv "$BIN.new" "$BIN"
echo "$BIN"
