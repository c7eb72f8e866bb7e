#!/usr/bin/env bash
# Install the Qwen3-TTS backend's Python dependencies into the current environment. Idempotent: pip leaves
# packages that already satisfy the pins alone, and the last step only checks that qwen_tts imports.
#
#   scripts/install_qwen.sh            # uses `python` (or $PYTHON)
#
# Notes:
# * torch is pinned on purpose: an unpinned `pip install torch` (or letting a dependency pull one) can fetch
#   gigabytes of CUDA wheels. Install a CUDA build yourself first if you want one; pip keeps it if it is 2.13.0.
# * qwen-tts is installed with --no-deps: its declared dependencies include librosa, torchaudio, sox and gradio,
#   none of which the 12 Hz models need (PyPI torchaudio does not even import against this torch).
#   chorus.models.qwen3.compat stands in for them at import time.
set -euo pipefail
PY="${PYTHON:-python}"
PIP=("$PY" -m pip install --disable-pip-version-check)

"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "transformers==4.57.3" "accelerate==1.12.0" einops soundfile safetensors "peft>=0.21"
"${PIP[@]}" --no-deps "qwen-tts==0.1.1"

"$PY" - <<'EOF'
import torch
import transformers

from chorus.models.qwen3.compat import import_qwen_tts

qwen_tts = import_qwen_tts()
print(f"qwen_tts OK (torch {torch.__version__}, transformers {transformers.__version__}, {qwen_tts.__file__})")
EOF
