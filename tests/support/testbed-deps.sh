#!/usr/bin/env bash
# Installs what the network-namespace test bed (tests/src/netns.rs) needs besides iproute2: nftables (the faults)
# and spin (the model check of docs/model/). Not ping: no test and no demo step runs it, and CI must prove that. Idempotent; needs root and Debian/Ubuntu's apt-get.
# The harness never installs anything itself: CI calls this script before the tests (see docs/testing.md).
set -euo pipefail
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v spin >/dev/null || missing+=(spin)
command -v gcc >/dev/null || missing+=(gcc)
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v nft >/dev/null && command -v ip >/dev/null
