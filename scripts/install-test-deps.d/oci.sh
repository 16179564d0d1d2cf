#!/usr/bin/env bash
# Installs umoci, which tests/tests/sidecar_image.rs uses to unpack the OCI image that
# scripts/build-image.sh writes (an independent check of the layout), and `file`, which the script
# uses to check the binary is static; only when missing. Idempotent; needs root (or sudo) and
# apt-get.
set -euo pipefail

missing=()
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
command -v file >/dev/null 2>&1 || missing+=(file)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "oci.sh: umoci and file already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "oci.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
