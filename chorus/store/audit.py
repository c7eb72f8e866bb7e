"""The audit trail: append-only rows, each chained to the one before by a hash.

Row n stores ``hash_n = sha256(hash_{n-1} || canonical(row n))`` (hex), where the canonical row is the JSON of
its fields (sorted keys, no spaces) and ``hash_0`` is 64 zeros. Editing, deleting, inserting or reordering a
row breaks the chain at that row, and ``verify`` names it. Rows are numbered (``seq``) by the writer: a row
takes ``seq = last + 1`` and ``prev_hash = last hash`` and the primary key refuses a second row with that
number, so two replicas appending at once cannot fork the chain (the loser retries on the new head).

Retention: ``purge`` deletes the oldest rows and appends a checkpoint row that carries the last purged row's
seq and hash, so the rows that remain still verify from there. What a chain alone cannot show is rows cut off
its newest end; compare ``verify``'s head with one exported earlier (``chorus audit verify`` prints it) to
catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from chorus.store.sql import SqlStore
from chorus.store.tables import AuditRow, utcnow

GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
_APPEND_ATTEMPTS = 20


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers: every field but the hash itself."""
    fields = {k: row[k] for k in ("seq", "at", "tenant_id", "kind", "key_id", "subject", "detail", "prev_hash")}
    return _dumps(fields).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(row)).hexdigest()


def _as_dict(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "tenant_id": row.tenant_id,
        "kind": row.kind,
        "key_id": row.key_id,
        "subject": row.subject,
        "detail": json.loads(row.detail),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    head: str  # the newest row's hash (GENESIS when empty)
    first_bad_seq: int | None = None
    problem: str | None = None


class AuditLog:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def append(
        self,
        kind: str,
        *,
        tenant_id: str,
        key_id: str | None = None,
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Append one row at the head of the chain; returns it (with its seq and hash)."""
        moment = (at or utcnow()).isoformat(timespec="microseconds")
        # Stored as canonical JSON; the row is hashed with it read back, exactly as verify will see it.
        body = _dumps(dict(detail or {}))
        for _ in range(_APPEND_ATTEMPTS):
            with self.sql.session() as session:
                last = session.execute(
                    select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
                ).first()
                seq, prev = (last[0] + 1, last[1]) if last is not None else (1, GENESIS)
                row = {
                    "seq": seq,
                    "at": moment,
                    "tenant_id": tenant_id,
                    "kind": kind,
                    "key_id": key_id,
                    "subject": subject,
                    "detail": json.loads(body),
                    "prev_hash": prev,
                }
                row["hash"] = chain_hash(prev, row)
                session.add(AuditRow(**{**row, "detail": body}))
                try:
                    session.commit()
                    return row
                except IntegrityError:  # another writer took this seq: retry on the new head
                    session.rollback()
        raise RuntimeError(f"audit: could not append after {_APPEND_ATTEMPTS} attempts (contention)")

    def rows(self, tenant_id: str | None = None) -> Iterator[dict[str, Any]]:
        with self.sql.session() as session:
            query = select(AuditRow).order_by(AuditRow.seq)
            if tenant_id is not None:
                query = query.where(AuditRow.tenant_id == tenant_id)
            for row in session.scalars(query).yield_per(1000):
                yield _as_dict(row)

    def verify(self) -> Verification:
        """Walk the chain from its oldest row; the first row that does not fit is named."""
        rows = list(self.rows())
        if not rows:
            return Verification(True, 0, GENESIS)
        # After a purge the chain starts later: a checkpoint row (itself in the chain) says what it hangs from.
        start_seq, prev = int(rows[0]["seq"]), GENESIS
        if start_seq != 1:
            purged = {
                int(r["detail"]["purged_through_seq"]): str(r["detail"]["purged_through_hash"])
                for r in rows
                if r["kind"] == CHECKPOINT
            }
            if start_seq - 1 not in purged:
                problem = f"rows before {start_seq} are gone and no checkpoint records their purge"
                return Verification(False, len(rows), rows[-1]["hash"], start_seq, problem)
            prev = purged[start_seq - 1]
        for i, row in enumerate(rows):
            expected_seq = start_seq + i
            if row["seq"] != expected_seq:
                problem = f"row {expected_seq} is missing (found {row['seq']})"
                return Verification(False, len(rows), rows[-1]["hash"], expected_seq, problem)
            if row["prev_hash"] != prev:
                return Verification(False, len(rows), rows[-1]["hash"], row["seq"], "does not follow the row before it")
            if chain_hash(prev, row) != row["hash"]:
                return Verification(
                    False, len(rows), rows[-1]["hash"], row["seq"], "its content does not match its hash"
                )
            prev = row["hash"]
        return Verification(True, len(rows), prev)

    def purge(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Delete rows older than ``older_than`` (a prefix of the chain) and append a checkpoint that keeps the
        rest verifiable. Returns how many rows went."""
        cutoff = ((now or utcnow()) - older_than).isoformat(timespec="microseconds")
        with self.sql.session() as session:
            # The prefix: every row up to the newest one older than the cutoff (rows are appended in time order).
            last_old = session.execute(
                select(AuditRow.seq, AuditRow.hash).where(AuditRow.at < cutoff).order_by(AuditRow.seq.desc()).limit(1)
            ).first()
            if last_old is None:
                return 0
            through_seq, through_hash = int(last_old[0]), str(last_old[1])
        # The checkpoint goes in first: a crash between the two steps leaves a chain that still verifies.
        self.append(
            CHECKPOINT,
            tenant_id="default",
            detail={"purged_through_seq": through_seq, "purged_through_hash": through_hash, "cutoff": cutoff},
        )
        with self.sql.session() as session:
            result = session.execute(delete(AuditRow).where(AuditRow.seq <= through_seq))
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]
