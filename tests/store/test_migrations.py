"""Schema migrations run at start-up: on a fresh database, again as a no-op, and from several processes at once."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from chorus.store import SqlStore, VoiceExistsError, VoiceStore
from chorus.store.sql import head_revision
from chorus.store.tables import Base, TenantRow
from tests.store.fixtures import Backend


def _tenants(sql: SqlStore) -> list[str]:
    with sql.session() as session:
        return list(session.scalars(select(TenantRow.id).order_by(TenantRow.id)))


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_fresh_database_is_migrated_at_start_up(backend: Backend) -> None:
    sql, _ = backend.open(migrate=False)
    assert sql.current_revision() is None
    assert "voices" not in inspect(sql.engine).get_table_names()
    sql.close()

    sql, _ = backend.open()
    assert sql.current_revision() == head_revision() == "0010"
    inspector = inspect(sql.engine)
    assert {
        "tenants",
        "voices",
        "alembic_version",
        "jobs",
        "job_items",
        "webhook_events",
        "datasets",
        "fine_tunes",
        "fine_tune_events",
    } <= set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("voices")}
    assert {"consent_id", "consent_status", "conversion_key", "processed_sha256", "status"} <= columns
    assert inspector.get_unique_constraints("voices") == []  # names are unique among ready voices (an index)
    assert _tenants(sql) == ["default"]
    sql.close()


def test_second_start_is_a_no_op(backend: Backend) -> None:
    sql, blobs = backend.open()
    voice = VoiceStore(sql, blobs).create(
        "default", "kept", "en", "hello", b"o", b"p", b"e", duration_s=1.5, sample_rate=24_000
    )
    sql.close()

    sql, blobs = backend.open()  # start-up again: upgrade finds nothing to do
    sql.migrate()
    assert sql.current_revision() == "0010"
    assert _tenants(sql) == ["default"]  # the seed row was not inserted twice
    assert VoiceStore(sql, blobs).get("default", voice.id) == voice
    sql.close()


def test_concurrent_start_ups_migrate_once(backend: Backend) -> None:
    """Replicas starting together: a lock serialises them (advisory lock on PostgreSQL, lock file on SQLite)."""
    stores = [SqlStore(backend.config.resolved_database_url(backend.data_dir)) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def start(sql: SqlStore) -> None:
        try:
            barrier.wait()
            sql.migrate()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,), daemon=True) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "start-ups deadlocked"
    assert errors == []
    with stores[0].session() as session:
        assert session.scalar(select(func.count()).select_from(TenantRow)) == 1
    assert all(s.current_revision() == "0010" for s in stores)
    for s in stores:
        s.close()


def test_upgrade_from_0001_keeps_voices_and_frees_names_of_pending_rows(backend: Backend) -> None:
    """A database of the first release upgrades in place: rows kept; names now unique ignoring case."""
    sql, blobs = backend.open(migrate=False)
    sql.migrate("0001")
    kept = VoiceStore(sql, blobs).create(
        "default", "Kept", "en", None, b"o", b"p", b"e", duration_s=1, sample_rate=24_000
    )
    sql.migrate()
    assert sql.current_revision() == "0010"
    store = VoiceStore(sql, blobs)
    assert store.list("default") == [kept]
    with pytest.raises(VoiceExistsError):
        store.create("default", "kEPT", "en", None, b"o", b"p", b"e", duration_s=1, sample_rate=24_000)
    sql.close()


@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_orm_mapping_matches_the_migrations(backend: Backend) -> None:
    """tables.py and the migrations describe the same schema (so a later autogenerate starts from no diff)."""
    sql, _ = backend.open()
    with sql.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    sql.close()
