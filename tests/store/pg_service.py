"""A throwaway PostgreSQL cluster on 127.0.0.1 for the storage tests (Debian's PostgreSQL 15, installed if missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from tests.store.service_util import ServiceError, free_port, run


def create_database(admin_url: str, name: str) -> str:
    """A new empty database on the server of ``admin_url`` (a SQLAlchemy URL); returns the new database's URL."""
    url = make_url(admin_url)
    conninfo = make_conninfo(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username, password=url.password, dbname="postgres"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.set(database=name).render_as_string(hide_password=False)


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True)
    return versions[0].parent if versions else None


def install_postgres() -> Path:
    bindir = postgres_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceError("PostgreSQL is not installed (no initdb) and apt-get cannot run here (needs root)")
    env = "DEBIAN_FRONTEND=noninteractive"
    try:
        run(["env", env, "apt-get", "install", "-y", "-q", "postgresql"], "apt-get install postgresql")
    except ServiceError:
        run(["apt-get", "update", "-q"], "apt-get update")
        run(["env", env, "apt-get", "install", "-y", "-q", "postgresql"], "apt-get install postgresql")
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return bindir


@dataclass
class Postgres:
    """A throwaway cluster: trust auth for user "chorus", fsync off (test data only)."""

    root: str
    port: int
    bindir: str

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://chorus@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        data = str(Path(self.root) / "data")
        pg_ctl = str(Path(self.bindir) / "pg_ctl")
        subprocess.run([*_as_postgres(), pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres() -> list[str]:
    """initdb refuses to run as root: as root, run the server as the "postgres" user Debian creates."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def start_postgres() -> Postgres:
    bindir = install_postgres()
    root = Path(tempfile.mkdtemp(prefix="chorus-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "postgres.log"
    run(
        [
            *_as_postgres(),
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "chorus",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        "initdb",
        timeout=120,
    )
    last_error: ServiceError | None = None
    for _ in range(3):  # a free port can be taken by someone else before the server binds it: try another
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            run(
                [
                    *_as_postgres(),
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ],
                "pg_ctl start",
                timeout=90,
            )
            return Postgres(str(root), port, str(bindir))
        except ServiceError as e:
            log_tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            last_error = ServiceError(f"{e}\n{log_tail}")
    shutil.rmtree(root, ignore_errors=True)
    assert last_error is not None
    raise last_error
