"""The hash-chained audit trail (chorus.store.audit) on SQLite and PostgreSQL: every kind of tampering is named,
purges keep the chain verifiable, concurrent writers cannot fork it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from chorus.store.audit import CHECKPOINT, GENESIS, AuditLog
from chorus.store.tables import AuditRow, utcnow
from tests.store.fixtures import Backend


@pytest.fixture
def audit(database: Backend) -> Iterator[AuditLog]:
    sql, _ = database.open()
    yield AuditLog(sql)
    sql.close()


def fill(audit: AuditLog, n: int = 5) -> None:
    for i in range(n):
        audit.append("synthesis", tenant_id="default", key_id=f"key_{i:016x}", subject="joe", detail={"i": i})


def bad_row(audit: AuditLog) -> int | None:
    result = audit.verify()
    assert result.ok == (result.first_bad_seq is None)
    return result.first_bad_seq


def test_the_first_row_hashes_as_documented(audit: AuditLog) -> None:
    row = audit.append("key.create", tenant_id="acme", subject="key_1", detail={"role": "user"})
    fields = {k: row[k] for k in ("seq", "at", "tenant_id", "kind", "key_id", "subject", "detail", "prev_hash")}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert row["prev_hash"] == GENESIS and row["seq"] == 1
    assert row["hash"] == hashlib.sha256(GENESIS.encode() + canonical).hexdigest()
    assert audit.verify().head == row["hash"]


def test_an_untouched_chain_verifies(audit: AuditLog) -> None:
    assert audit.verify().ok and audit.verify().rows == 0
    fill(audit)
    result = audit.verify()
    assert (result.ok, result.rows) == (True, 5)


def test_an_edited_row_is_named(audit: AuditLog) -> None:
    fill(audit)
    with audit.sql.session() as s:
        s.execute(update(AuditRow).where(AuditRow.seq == 3).values(detail='{"i":99}'))
        s.commit()
    assert bad_row(audit) == 3


def test_a_deleted_row_is_named(audit: AuditLog) -> None:
    fill(audit)
    with audit.sql.session() as s:
        s.execute(delete(AuditRow).where(AuditRow.seq == 2))
        s.commit()
    assert bad_row(audit) == 2
    with audit.sql.session() as s:  # the oldest row, without a checkpoint
        s.execute(delete(AuditRow).where(AuditRow.seq == 1))
        s.commit()
    assert bad_row(audit) == 3


def test_an_inserted_row_is_named(audit: AuditLog) -> None:
    fill(audit)
    with audit.sql.session() as s:  # make room after row 2, then forge a row 3 that links to row 2
        for seq in (5, 4, 3):
            s.execute(update(AuditRow).where(AuditRow.seq == seq).values(seq=seq + 1))
        row2 = s.scalars(select(AuditRow).where(AuditRow.seq == 2)).one()
        s.add(
            AuditRow(
                seq=3,
                at=row2.at,
                tenant_id="default",
                kind="synthesis",
                key_id=None,
                subject="joe",
                detail="{}",
                prev_hash=row2.hash,
                hash="f" * 64,
            )
        )
        s.commit()
    assert bad_row(audit) == 3


def test_reordered_rows_are_named(audit: AuditLog) -> None:
    fill(audit)
    with audit.sql.session() as s:
        s.execute(update(AuditRow).where(AuditRow.seq == 2).values(seq=-2))
        s.execute(update(AuditRow).where(AuditRow.seq == 3).values(seq=2))
        s.execute(update(AuditRow).where(AuditRow.seq == -2).values(seq=3))
        s.commit()
    assert bad_row(audit) == 2


def test_a_purge_keeps_the_rest_verifiable(audit: AuditLog) -> None:
    old = utcnow() - timedelta(days=100)
    for i in range(4):
        audit.append("synthesis", tenant_id="default", detail={"i": i}, at=old + timedelta(seconds=i))
    fill(audit, 3)
    assert audit.purge(timedelta(days=90)) == 4
    result = audit.verify()
    assert (result.ok, result.rows) == (True, 4)  # 3 new rows and the checkpoint
    kinds = [r["kind"] for r in audit.rows()]
    seqs = [r["seq"] for r in audit.rows()]
    assert kinds[-1] == CHECKPOINT and seqs[0] == 5
    assert audit.purge(timedelta(days=90)) == 0
    with audit.sql.session() as s:  # the first remaining row can still not go quietly
        s.execute(delete(AuditRow).where(AuditRow.seq == 5))
        s.commit()
    assert bad_row(audit) == 6


def test_concurrent_writers_do_not_fork_the_chain(database: Backend, audit: AuditLog) -> None:
    stores = [database.open()[0] for _ in range(3)]
    try:

        def write(sql_index: int) -> None:
            log = AuditLog(stores[sql_index])
            for i in range(15):
                log.append("synthesis", tenant_id="default", detail={"writer": sql_index, "i": i})

        threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for sql in stores:
            sql.close()
    result = audit.verify()
    assert (result.ok, result.rows) == (True, 45)


def test_export_is_one_tenants_rows(audit: AuditLog) -> None:
    audit.append("voice.create", tenant_id="acme", subject="voice_a")
    audit.append("voice.create", tenant_id="other", subject="voice_b")
    assert [r["subject"] for r in audit.rows("acme")] == ["voice_a"]
