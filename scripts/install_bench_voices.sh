#!/usr/bin/env bash
# Install the offline target speakers of `chorus bench-voices` (voice-conversion quality), listed with their
# development/test split in chorus/bench/voice_speakers.py: festival with the kal and ked diphone voices, the
# CMU SLT HTS voice, the Catalan ona HTS voice, the Italian lp, Finnish lj and mv, and Czech dita and machac
# diphone voices; flite (clustergen voices awb, rms, slt); espeak-ng. Idempotent: only missing packages are
# installed (apt-get, so run it as root or with sudo on Debian/Ubuntu).
#
#   scripts/install_bench_voices.sh
set -euo pipefail
PACKAGES=(
    festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    festvox-ca-ona-hts festvox-italp16k festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita festvox-czech-machac
    flite espeak-ng
)
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
