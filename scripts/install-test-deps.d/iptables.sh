#!/usr/bin/env bash
# Installs what iptables-init's kernel tests need (iptables incl. ip6tables, nftables, iproute2),
# only when missing. Idempotent; needs root (or sudo) and apt-get.
set -euo pipefail

missing=()
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "iptables.sh: iptables, nftables and ip already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "iptables.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
