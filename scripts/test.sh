#!/usr/bin/env bash
# Install what the tests need, lint, type-check and run the whole suite. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: espeak-ng (real speech for the voice tests), PostgreSQL 15 (storage tests).
need=()
command -v espeak-ng > /dev/null || need+=(espeak-ng)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi
# festival and its voices: target speakers of the voice-conversion bench (its smoke test runs in the suite).
bash scripts/install_bench_voices.sh > /dev/null
# Debian's Chromium and Playwright: the web playground's browser tests (tests/e2e/test_playground.py).
bash scripts/install_browser.sh > /dev/null

# .[ray]: Ray Serve, for tests/deploy/test_ray.py (chorus.deploy.ray_app on a local Ray).
python -m pip install --quiet --disable-pip-version-check -e ".[test,ray]"
# Deploy linters and validators (checkov, hadolint, kubernetes-validate) in a virtualenv of their own: checkov's
# pins would clash with the project's. tests/deploy runs them over deploy/, the Dockerfiles and the Terraform.
bash scripts/install_deploy_tools.sh > /dev/null
# The Qwen3-TTS backend's stack (CPU torch from the local wheel, transformers, qwen-tts without its extras):
# its tests build tiny random models and run everywhere.
bash scripts/install_qwen.sh > /dev/null
# Speaker embeddings (chorus.voices.embedding): resemblyzer only after the line above has pinned the CPU torch,
# or pip pulls the newest CUDA torch for it; setuptools<81 still ships pkg_resources, which its webrtcvad imports.
python -m pip install --quiet --disable-pip-version-check -e ".[voices]"
# resemblyzer's old webrtcvad writes the same module files as the base install's webrtcvad-wheels: reinstall the
# latter last, so the suite tests the VAD users run (tests/voices/test_vad_install.py checks the bytes).
python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "webrtcvad-wheels>=2.0.14"

ruff check chorus tests bench scripts
ruff format --check chorus tests bench scripts
mypy

set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
