#!/usr/bin/env bash
# Install the offline target speakers of `chorus bench-voices` (voice-conversion quality): festival with its
# kal and ked diphone voices and the CMU SLT HTS voice, and espeak-ng. Idempotent: only missing packages are
# installed (apt-get, so run it as root or with sudo on Debian/Ubuntu).
#
#   scripts/install_bench_voices.sh
set -euo pipefail
PACKAGES=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "bench voices already installed: ${PACKAGES[*]}"
    exit 0
fi
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
"${SUDO[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
