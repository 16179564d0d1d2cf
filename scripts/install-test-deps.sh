#!/usr/bin/env bash
# Installs everything the test suite needs that a fresh machine lacks, idempotently: each script
# in install-test-deps.d/ installs one thing only when it is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for step in "$here"/install-test-deps.d/*.sh; do
  bash "$step"
done
