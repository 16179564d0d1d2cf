#!/usr/bin/env bash
# Builds istioctl (for tests/tests/istioctl.rs: `istioctl proxy-config ... --file <config dump>`)
# into $REPO/.cache/go/bin/, at the Istio version tests/istiod/go.mod pins, with Istio's own
# go.mod (`go install ...@version`). Rebuilds only when the binary is missing or was built from
# another version (read back with `go version -m`). Needs Go and the module proxy; the first build
# takes under a minute once istiod.sh has filled the module cache. Under CI=true a failure is
# fatal; elsewhere it says what is missing and the istioctl tests skip.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="$REPO/.cache/go/bin"
BIN="$BIN_DIR/istioctl"

give_up() {
  echo "istioctl.sh: $1" >&2
  if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
    exit 1
  fi
  echo "istioctl.sh: the istioctl tests will skip" >&2
  exit 0
}

# `require istio.io/istio vX` or a line `istio.io/istio vX` inside a require block.
VERSION="$(awk '{ for (i = 1; i < NF; i++) if ($i == "istio.io/istio") { print $(i + 1); exit } }' "$REPO/tests/istiod/go.mod")"
[ -n "$VERSION" ] || give_up "no istio.io/istio version in tests/istiod/go.mod"

command -v go >/dev/null 2>&1 || give_up "Go is not installed (tests/istiod/go.mod names the version)"

if [ -x "$BIN" ]; then
  BUILT="$(go version -m "$BIN" 2>/dev/null || true)"
  BUILT_VERSION="$(printf '%s\n' "$BUILT" | awk '$1 == "mod" && $2 == "istio.io/istio" { print $3; exit }')"
  if [ "$BUILT_VERSION" = "$VERSION" ]; then
    echo "istioctl.sh: istioctl $VERSION is up to date"
    echo "$BIN"
    exit 0
  fi
fi

echo "istioctl.sh: building istioctl $VERSION"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && GOBIN="$TMP" GOFLAGS=-buildvcs=false go install "istio.io/istio/istioctl/cmd/istioctl@$VERSION") ||
  give_up "go install istio.io/istio/istioctl/cmd/istioctl@$VERSION failed"
mkdir -p "$BIN_DIR"
mv "$TMP/istioctl" "$BIN"
echo "$BIN"
