#!/usr/bin/env bash
# Install the deploy lint/validation tools (checkov, hadolint, kubernetes-validate, jsonschema, pyyaml) into their
# OWN virtualenv: checkov pins many packages that would clash with chorus's. Idempotent, and quick when the venv
# already satisfies deploy/tools-requirements.txt (a stamp holds the hash of the requirements it was built from).
#
#   scripts/install_deploy_tools.sh          # venv at ${CHORUS_DEPLOY_TOOLS:-$HOME/.cache/chorus/deploy-tools}
#   "$CHORUS_DEPLOY_TOOLS/bin/checkov" --version
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHORUS_DEPLOY_TOOLS:-$HOME/.cache/chorus/deploy-tools}"
REQS="deploy/tools-requirements.txt"
PY="${PYTHON:-python3}"
STAMP="$VENV/.chorus-tools-stamp"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/checkov" ] && [ -x "$VENV/bin/hadolint" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
"$VENV/bin/hadolint" --version > /dev/null
"$VENV/bin/kubernetes-validate" --version > /dev/null
echo "$want" > "$STAMP"
echo "deploy tools installed in $VENV"
