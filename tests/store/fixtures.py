"""Storage backends for the tests: SQLite + local dir always; PostgreSQL and S3 (SeaweedFS) as real servers.

A pytest plugin (tests/conftest.py loads it), so that tests/store and tests/e2e share one server of each.

The servers start once per session, on first use, on 127.0.0.1 (pg_service.py, s3_service.py), unless
CHORUS_TEST_PG_URL / CHORUS_TEST_S3_* name running ones (scripts/services.sh start). A guard process stops them
even if pytest is killed. Each test gets its own database and S3 prefix.
A server that cannot start skips its tests, with the reason repeated in a banner at the end of the run; under
CI (``CI=true``, which .ci/run sets) it fails them instead, so a run cannot pass without the real services.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from chorus.store import BlobStore, SqlStore, StoreConfig, VoiceStore, ensure_tenant, open_blob_store, open_store
from tests.store.pg_service import Postgres, create_database, start_postgres
from tests.store.s3_service import Seaweed, start_seaweed
from tests.store.service_util import ServiceError
from tests.store.services import guard

BACKENDS = ["sqlite+file", "postgres+file", "postgres+s3"]
_UNAVAILABLE: dict[str, str] = {}
ServiceT = TypeVar("ServiceT", Postgres, Seaweed)


def services_required() -> bool:
    """Under CI a missing service is a failure, not a skip (``CI=true``, as .ci/run and most CI systems set)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(service: str, reason: str) -> NoReturn:
    _UNAVAILABLE[service] = reason
    if services_required():
        pytest.fail(f"{service} could not start, and CI requires it: {reason}", pytrace=False)
    pytest.skip(f"{service} could not start, its tests are skipped: {reason}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _UNAVAILABLE:
        return
    terminalreporter.section("STORAGE SERVICES UNAVAILABLE: TESTS SKIPPED", sep="!", red=True, bold=True)
    for service, reason in _UNAVAILABLE.items():
        terminalreporter.line(f"{service}: {reason}", red=True)
    terminalreporter.line("Start them with scripts/services.sh start (see its header).", red=True)


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    key: str
    secret: str
    bucket: str


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server where the tests may CREATE DATABASE."""
    external = os.environ.get("CHORUS_TEST_PG_URL")
    if external:
        yield external
        return
    with _service("PostgreSQL", start_postgres) as server:
        yield server.admin_url


@pytest.fixture(scope="session")
def s3_target() -> Iterator[S3Target]:
    endpoint = os.environ.get("CHORUS_TEST_S3_ENDPOINT")
    if endpoint:
        env = os.environ
        yield S3Target(endpoint, env["CHORUS_TEST_S3_KEY"], env["CHORUS_TEST_S3_SECRET"], env["CHORUS_TEST_S3_BUCKET"])
        return
    with _service("SeaweedFS (S3)", start_seaweed) as server:
        yield S3Target(server.endpoint, server.key, server.secret, server.bucket)


@contextlib.contextmanager
def _service(name: str, start: Callable[[], ServiceT]) -> Iterator[ServiceT]:
    """Start a real service (skipping loudly if it cannot start), guard it against a killed pytest, stop it."""
    try:
        server = start()
    except ServiceError as e:
        _unavailable(name, str(e))
    watcher = guard(server)
    try:
        yield server
    finally:
        server.stop()
        _release(watcher)


def _release(watcher: subprocess.Popen[bytes]) -> None:
    """Close the guard's pipe: it finds the service already stopped, and exits."""
    assert watcher.stdin is not None
    watcher.stdin.close()
    watcher.wait(30)


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class Backend:
    """One storage configuration; ``config_args`` is the same as plain JSON, for subprocesses."""

    name: str
    data_dir: Path
    config_args: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> StoreConfig:
        return StoreConfig(**self.config_args)

    def open(self, *, migrate: bool = True) -> tuple[SqlStore, BlobStore]:
        return open_store(self.config, self.data_dir, migrate=migrate)


def make_backend(kind: str, request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    """A fresh, not yet migrated database and an empty blob root: "sqlite+file", "postgres+file" or "postgres+s3"."""
    sql_kind, blob_kind = kind.split("+")
    args: dict[str, Any] = {}
    if sql_kind == "postgres":
        args["database_url"] = create_database(request.getfixturevalue("postgres_admin_url"), _unique("t"))
    if blob_kind == "s3":
        s3: S3Target = request.getfixturevalue("s3_target")
        args |= {"blob_url": f"s3://{s3.bucket}/{_unique('t')}", "s3_endpoint_url": s3.endpoint}
        args |= {"s3_key": s3.key, "s3_secret": s3.secret}
    return Backend(kind, data_dir, args)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test on each of the three backends."""
    return make_backend(str(request.param), request, tmp_path / "data")


@pytest.fixture(params=["sqlite+file", "postgres+file"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test on a fresh SQLite and a fresh PostgreSQL database (for tables without blobs)."""
    return make_backend(str(request.param), request, tmp_path / "data")


@pytest.fixture
def voices(backend: Backend) -> Iterator[VoiceStore]:
    """A migrated VoiceStore with a second tenant, "acme", beside "default"."""
    sql, blobs = backend.open()
    ensure_tenant(sql, "acme", "Acme")
    yield VoiceStore(sql, blobs)
    sql.close()


@pytest.fixture(params=["file", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return open_blob_store((tmp_path / "blobs").as_uri())
    s3: S3Target = request.getfixturevalue("s3_target")
    options = {"key": s3.key, "secret": s3.secret, "client_kwargs": {"endpoint_url": s3.endpoint}}
    return open_blob_store(f"s3://{s3.bucket}/{_unique('b')}", storage_options=options)
