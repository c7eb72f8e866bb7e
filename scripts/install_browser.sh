#!/usr/bin/env bash
# The browser for the playground's end-to-end tests (tests/e2e/test_playground.py): Debian's Chromium, driven by
# Playwright for Python. Idempotent. Playwright brings its own driver; no browser is ever downloaded (`playwright
# install` is not used): the tests launch /usr/bin/chromium.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
fi
python -m pip install --quiet --disable-pip-version-check "playwright>=1.49"
