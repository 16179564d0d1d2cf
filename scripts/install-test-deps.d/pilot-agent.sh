#!/usr/bin/env bash
# Builds Istio's pilot-agent (the sidecar agent, at the Istio version tests/istiod pins; the Go
# module tests/pilot-agent names it as a `tool`) into $REPO/.cache/go/bin/pilot-agent, and copies
# Istio's sidecar bootstrap template from the same module beside it, for the pilot-agent tests.
# Only when missing or older than tests/pilot-agent/go.{mod,sum}. Needs Go; the first build
# fetches the agent's few extra modules. Under CI=true a failure is fatal; elsewhere it says what
# is missing and the pilot-agent tests skip.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$REPO/tests/pilot-agent"
BIN="$REPO/.cache/go/bin/pilot-agent"
TEMPLATE="$REPO/.cache/go/bin/pilot-agent-envoy_bootstrap_tmpl.json"

give_up() {
  echo "pilot-agent.sh: $1" >&2
  if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
    exit 1
  fi
  echo "pilot-agent.sh: the pilot-agent tests will skip" >&2
  exit 0
}

if [ -x "$BIN" ] && [ -f "$TEMPLATE" ] \
  && [ -z "$(find "$SRC" -type f \( -name go.mod -o -name go.sum \) -newer "$BIN")" ]; then
  echo "pilot-agent.sh: pilot-agent is up to date"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || give_up "Go is not installed (tests/pilot-agent/go.mod names the version)"
echo "pilot-agent.sh: building istio.io/istio/pilot/cmd/pilot-agent from tests/pilot-agent"
mkdir -p "$(dirname "$BIN")"
(cd "$SRC" && go build -o "$BIN.new" istio.io/istio/pilot/cmd/pilot-agent) \
  || give_up "go build of pilot-agent in tests/pilot-agent failed"
ISTIO_DIR="$(cd "$SRC" && go list -m -f '{{.Dir}}' istio.io/istio)" \
  || give_up "cannot locate the istio.io/istio module"
cp "$ISTIO_DIR/tools/packaging/common/envoy_bootstrap.json" "$TEMPLATE.new" \
  || give_up "no tools/packaging/common/envoy_bootstrap.json in $ISTIO_DIR"
mv "$TEMPLATE.new" "$TEMPLATE"
mv "$BIN.new" "$BIN"
echo "$BIN"
