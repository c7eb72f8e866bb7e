#!/usr/bin/env bash
# Install what the tests need, lint, type-check and run the whole suite. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The Qwen3-TTS backend's stack (CPU torch from the local wheel, transformers, qwen-tts without its extras):
# its tests build tiny random models and run everywhere.
bash scripts/install_qwen.sh > /dev/null

ruff check chorus tests bench
ruff format --check chorus tests bench
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
