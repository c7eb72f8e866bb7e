"""The SQL side of the store: one engine per process, schema kept current by Alembic at start-up.

SQLite (a file in the data dir) is the default for a single process; PostgreSQL (psycopg 3) for several replicas.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant shared by every chorus process: pg_advisory_xact_lock serialises concurrent start-ups on it.
_MIGRATION_LOCK_KEY = 0x63686F727573  # "chorus"


def normalize_url(url: str | URL) -> URL:
    """Read ``postgres://`` and ``postgresql://`` as psycopg 3, the driver chorus ships (psycopg2 is not installed)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # busy_timeout first, so that switching to WAL waits for another process instead of failing.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer (and the other way round)
    cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
    cursor.close()


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _alembic_config(connection: Connection | None = None) -> Config:
    """A Config built in code (no alembic.ini), pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


class SqlStore:
    """Engine + session factory for one database URL."""

    def __init__(self, url: str | URL) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self.sessions()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to the latest revision (or ``revision``); a no-op when it is already there.

        Several processes may start at once. On PostgreSQL the whole upgrade runs in one transaction that first takes
        a transaction-level advisory lock, so the second process waits, then reads the version table the first one
        committed and finds nothing to do. SQLite cannot roll back DDL reliably, so a lock file beside the database
        does the same job (every process using a SQLite file runs on the host that holds it).
        """
        with self._file_lock(), self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            command.upgrade(_alembic_config(connection), revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        database = self.url.database if self.dialect == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate.lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        self.engine.dispose()


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (SQLAlchemy types execute()'s result loosely)."""
    return int(cast(CursorResult[Any], result).rowcount)
