#!/usr/bin/env bash
# The test command: install what the tests need, build the binaries the tests run, run every test.
# Under CI=true a test whose prerequisite is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
