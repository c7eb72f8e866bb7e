"""The audit writer (chorus.audit): rows written off the caller's thread, failures counted and logged whole,
retention run by the writer; a synthesis receipt hashes exactly the bytes delivered."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chorus.audit import AuditWriter, SynthesisReceipt
from chorus.store.audit import AuditLog
from chorus.store.sql import SqlStore
from chorus.store.tables import utcnow


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    sql = SqlStore(f"sqlite:///{tmp_path / 'a.db'}")
    sql.migrate()
    return AuditLog(sql)


def test_rows_are_written_in_order_and_the_receipt_hashes_what_was_delivered(audit: AuditLog) -> None:
    writer = AuditWriter(audit)
    receipt = SynthesisReceipt(
        writer, tenant_id="acme", key_id="key_1", voice_id="joe", request_id="r1", text="Hello.", response_format="mp3"
    )
    pieces = [b"ID3", b"", b"\x00\x01" * 100, b"tail"]
    for piece in pieces:
        receipt.delivered(piece)
    receipt.audio_seconds = 1.25
    receipt.seal("ok")
    receipt.seal("aborted")  # only the first seal counts
    writer.record("voice.delete", tenant_id="acme", subject="voice_x")
    writer.close()
    rows = list(audit.rows())
    assert [r["kind"] for r in rows] == ["synthesis", "voice.delete"]
    detail = rows[0]["detail"]
    assert detail["audio_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert detail["text_sha256"] == hashlib.sha256(b"Hello.").hexdigest()
    assert (detail["outcome"], detail["audio_bytes"], detail["audio_seconds"]) == ("ok", 207, 1.25)
    assert (rows[0]["tenant_id"], rows[0]["key_id"], rows[0]["subject"]) == ("acme", "key_1", "joe")
    assert writer.written == 2 and writer.failures == 0 and audit.verify().ok


class BrokenLog(AuditLog):
    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        raise RuntimeError("database is gone")


def test_a_row_that_cannot_be_written_is_counted_and_logged_whole(
    audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    writer = AuditWriter(BrokenLog(audit.sql))
    with caplog.at_level(logging.ERROR, logger="chorus.audit"):
        writer.record("synthesis", tenant_id="acme", subject="joe", detail={"text_sha256": "abc123"})
        writer.close()
    assert writer.failures == 1 and writer.written == 0
    assert "abc123" in caplog.text and "could not be written" in caplog.text


def test_the_writer_purges_old_rows_at_start(audit: AuditLog) -> None:
    audit.append("synthesis", tenant_id="default", at=utcnow() - timedelta(days=10))
    audit.append("synthesis", tenant_id="default")
    writer = AuditWriter(audit, retention_days=7)
    writer.flush()
    writer.close()
    assert writer.purged == 1
    result = audit.verify()
    assert result.ok and result.rows == 2  # the recent row and the checkpoint
