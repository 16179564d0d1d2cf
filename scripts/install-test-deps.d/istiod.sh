#!/usr/bin/env bash
# Builds istiod-standalone (tests/istiod: Istio's own discovery server serving a directory of
# Istio YAML, for the istiod tests) into $REPO/.cache/go/bin/, only when it is missing or older
# than its sources. Needs Go; the first build fetches Istio's modules and takes minutes. Under
# CI=true a failure is fatal; elsewhere it says what is missing and the istiod tests skip.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$REPO/tests/istiod"
BIN="$REPO/.cache/go/bin/istiod-standalone"

give_up() {
  echo "istiod.sh: $1" >&2
  if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
    exit 1
  fi
  echo "istiod.sh: the istiod tests will skip" >&2
  exit 0
}

if [ -x "$BIN" ] && [ -z "$(find "$SRC" -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$BIN")" ]; then
  echo "istiod.sh: istiod-standalone is up to date"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || give_up "Go is not installed (tests/istiod/go.mod names the version)"
echo "istiod.sh: building istiod-standalone from tests/istiod"
mkdir -p "$(dirname "$BIN")"
(cd "$SRC" && go build -o "$BIN.new" .) || give_up "go build in tests/istiod failed"
mv "$BIN.new" "$BIN"
echo "$BIN"
