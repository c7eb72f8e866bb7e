"""Schemathesis against the server's own OpenAPI schema: every operation, with an API key, on a real `chorus serve`.

Each operation gets its schema's examples, a coverage pass (boundary and invalid values, derived from the schema)
and a bounded number of random (fuzzed) requests; every response must be no 5xx and must match what the schema
declares for its status code (body schema and media type).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from schemathesis import Case

from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_EXAMPLES = 25  # random requests per operation, on top of the examples and coverage phases
REQUEST_TIMEOUT_S = 30
CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")


def create_key(root: Path) -> str:
    """An admin key (the admin-only routes answer, not only 403) in the data dir, before the server starts."""
    config = root / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(root / "data")}))
    command = [sys.executable, "-m", "chorus.cli", "keys", "create", "--tenant", "fuzz", "--role", "admin"]
    done = subprocess.run([*command, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]  # the key is the last line


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("schema")
    key = create_key(root)
    config = {
        "data_dir": str(root / "data"),
        "auth": {"mode": "required"},
        # Random inputs stay cheap: at most 200 characters of text, bounded waits, no canary traffic.
        "server": {
            "max_input_chars": 200,
            "canary_interval_s": 0,
            "request_timeout_s": 20,
            "max_queue_wait_s": 5,
        },
        # A job is a few lines at most, run one at a time.
        "jobs": {"max_items": 3, "concurrency": 1},
    }
    server = start_server(root, config)
    yield server, key
    stop_server(server)


@pytest.fixture(scope="module")
def api_schema(keyed_server: tuple[Server, str]) -> schemathesis.BaseSchema:
    server, key = keyed_server
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {key}"},
            "request-timeout": REQUEST_TIMEOUT_S,
            # No shrinking: a failure is reported as found (with its curl line) instead of replayed to a minimum,
            # which would re-run synthesis many times over. No example database written into the checkout.
            "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            # Generating a request can take a while on busy CI cores; that is no fault of the API.
            "suppress-health-check": ["too_slow"],
        }
    )
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config, timeout=30)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_answers_as_its_schema_says(case: Case) -> None:
    case.call_and_validate()
