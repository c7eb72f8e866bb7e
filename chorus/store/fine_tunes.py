"""Fine-tune jobs in SQL: one row per job, held by a worker under a lease, and its event log (loss, step, ETA).

A worker (``chorus worker --queue finetune``, any machine) claims a queued job, or a running one whose lease
expired (its worker was SIGKILLed or lost), with one conditional UPDATE, and renews the lease while it trains.
A worker told to stop (SIGTERM: a spot/preemptible reclaim notice) checkpoints and gives the job back queued,
without counting the attempt; the next worker resumes from the checkpoint. A job whose workers died
``max_attempts`` times fails. Cancelling a running job makes its lease unrenewable: the worker stops at its next
renewal. The end (succeeded with its voice, or failed) is recorded only under the lease that made it.
"""

from __future__ import annotations

import builtins
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from chorus.errors import ChorusError, NotFoundError
from chorus.store.sql import SqlStore, rowcount
from chorus.store.tables import TERMINAL, FineTuneEventRow, FineTuneRow, utcnow
from chorus.store.tenants import ensure_tenant

FINE_TUNE_PREFIX = "ft_"


class FineTuneNotFoundError(NotFoundError):
    """No fine-tune with this id in the caller's tenant; another tenant's reads the same."""


class FineTuneConflictError(ChorusError):
    status_code = 409
    error_type = "conflict_error"

    def __init__(self, message: str, *, code: str = "fine_tune_not_cancellable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FineTuneRecord:
    id: str
    tenant_id: str
    key_id: str | None
    dataset_id: str
    name: str
    status: str
    params: dict[str, Any]
    step: int
    steps: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    voice_id: str | None
    error: dict[str, Any] | None
    report: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: FineTuneRow) -> FineTuneRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            key_id=row.key_id,
            dataset_id=row.dataset_id,
            name=row.name,
            status=row.status,
            params=json.loads(row.params_json),
            step=row.step,
            steps=row.steps,
            attempts=row.attempts,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            voice_id=row.voice_id,
            error=json.loads(row.error_json) if row.error_json else None,
            report=json.loads(row.report_json) if row.report_json else None,
        )


@dataclass(frozen=True)
class FineTuneEvent:
    id: int
    created_at: datetime
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class FineTuneLease:
    """A job a worker holds: renew it before ``expires_at``; record its end under ``token``."""

    job: FineTuneRecord
    token: str
    attempt: int
    expires_at: datetime


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class FineTuneStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    # -- tenants' side ---------------------------------------------------------------------------

    def create(
        self, tenant_id: str, *, dataset_id: str, name: str, params: dict[str, Any], steps: int, key_id: str | None
    ) -> FineTuneRecord:
        ensure_tenant(self.sql, tenant_id)
        now = utcnow()
        row = FineTuneRow(
            id=f"{FINE_TUNE_PREFIX}{secrets.token_hex(12)}",
            tenant_id=tenant_id,
            key_id=key_id,
            dataset_id=dataset_id,
            name=name,
            status="queued",
            params_json=_json(params),
            step=0,
            steps=steps,
            attempts=0,
            created_at=now,
        )
        with self.sql.session() as session:
            session.add(row)
            session.flush()  # the row before its first event (the event's foreign key)
            session.add(
                FineTuneEventRow(fine_tune_id=row.id, created_at=now, type="status", data_json='{"status":"queued"}')
            )
            session.commit()
            session.refresh(row)
            return FineTuneRecord.from_row(row)

    def get(self, tenant_id: str, fine_tune_id: str) -> FineTuneRecord:
        with self.sql.session() as session:
            row = session.get(FineTuneRow, fine_tune_id)
            if row is None or row.tenant_id != tenant_id:
                raise FineTuneNotFoundError(f"no fine-tune {fine_tune_id!r}", param="fine_tune_id")
            return FineTuneRecord.from_row(row)

    def list(self, tenant_id: str, *, limit: int = 100, before: str | None = None) -> builtins.list[FineTuneRecord]:
        with self.sql.session() as session:
            query = select(FineTuneRow).where(FineTuneRow.tenant_id == tenant_id)
            if before is not None:
                anchor = session.get(FineTuneRow, before)
                if anchor is not None and anchor.tenant_id == tenant_id:
                    query = query.where(
                        or_(
                            FineTuneRow.created_at < anchor.created_at,
                            and_(FineTuneRow.created_at == anchor.created_at, FineTuneRow.id < anchor.id),
                        )
                    )
            rows = session.scalars(query.order_by(FineTuneRow.created_at.desc(), FineTuneRow.id.desc()).limit(limit))
            return [FineTuneRecord.from_row(r) for r in rows]

    def cancel(self, tenant_id: str, fine_tune_id: str) -> FineTuneRecord:
        job = self.get(tenant_id, fine_tune_id)
        if job.status in TERMINAL:
            raise FineTuneConflictError(f"fine-tune {fine_tune_id!r} already {job.status}")
        with self.sql.session() as session:
            done = session.execute(
                update(FineTuneRow)
                .where(FineTuneRow.id == fine_tune_id, FineTuneRow.status.not_in(TERMINAL))
                .values(status="cancelled", finished_at=utcnow(), lease_expires_at=None)
            )
            if rowcount(done) == 1:
                session.add(_event(fine_tune_id, "status", {"status": "cancelled"}))
            session.commit()
        return self.get(tenant_id, fine_tune_id)

    def events(
        self, tenant_id: str, fine_tune_id: str, *, after: int = 0, limit: int = 1000
    ) -> builtins.list[FineTuneEvent]:
        self.get(tenant_id, fine_tune_id)  # 404 for another tenant's
        with self.sql.session() as session:
            rows = session.scalars(
                select(FineTuneEventRow)
                .where(FineTuneEventRow.fine_tune_id == fine_tune_id, FineTuneEventRow.id > after)
                .order_by(FineTuneEventRow.id)
                .limit(limit)
            )
            return [FineTuneEvent(r.id, r.created_at, r.type, json.loads(r.data_json)) for r in rows]

    def uses_dataset(self, tenant_id: str, dataset_id: str) -> bool:
        """A fine-tune not ended yet trains on this dataset (it must not be deleted under it)."""
        with self.sql.session() as session:
            found = session.scalar(
                select(FineTuneRow.id)
                .where(
                    FineTuneRow.tenant_id == tenant_id,
                    FineTuneRow.dataset_id == dataset_id,
                    FineTuneRow.status.not_in(TERMINAL),
                )
                .limit(1)
            )
            return found is not None

    # -- workers ---------------------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float, max_attempts: int) -> FineTuneLease | None:
        """Take the oldest queued job, or a running one whose lease expired; fail one whose workers died
        ``max_attempts`` times (it may be what kills them)."""
        now = utcnow()
        claimable = or_(
            FineTuneRow.status == "queued",
            and_(FineTuneRow.status == "running", FineTuneRow.lease_expires_at < now),
        )
        with self.sql.session() as session:
            for _ in range(8):  # another worker may take the candidate between the SELECT and the UPDATE
                row = session.scalars(
                    select(FineTuneRow).where(claimable).order_by(FineTuneRow.created_at, FineTuneRow.id).limit(1)
                ).first()
                if row is None:
                    return None
                job_id, attempts = row.id, row.attempts
                where = and_(FineTuneRow.id == job_id, FineTuneRow.attempts == attempts, claimable)
                if attempts >= max_attempts:
                    error = {"code": "worker_lost", "message": f"its worker stopped {attempts} times while on it"}
                    values = {"status": "failed", "finished_at": now, "error_json": _json(error)}
                    if rowcount(session.execute(update(FineTuneRow).where(where).values(**values))) == 1:
                        session.add(_event(job_id, "status", {"status": "failed", "error": error}))
                    session.commit()
                    continue
                token = secrets.token_hex(16)
                expires = now + timedelta(seconds=lease_s)
                taken = session.execute(
                    update(FineTuneRow)
                    .where(where)
                    .values(
                        status="running",
                        lease_token=token,
                        lease_owner=owner[:128],
                        lease_expires_at=expires,
                        attempts=attempts + 1,
                        started_at=row.started_at or now,
                    )
                )
                if rowcount(taken) != 1:
                    session.rollback()
                    continue
                session.add(_event(job_id, "status", {"status": "running", "attempt": attempts + 1}))
                session.commit()
                session.refresh(row)
                return FineTuneLease(FineTuneRecord.from_row(row), token, attempts + 1, expires)
        return None

    def renew(self, lease: FineTuneLease, lease_s: float, *, step: int | None = None) -> bool:
        """Extend the lease (and record the step reached); False when the job is no longer this worker's."""
        values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_s)}
        if step is not None:
            values["step"] = step
        with self.sql.session() as session:
            result = session.execute(update(FineTuneRow).where(self._held(lease)).values(**values))
            session.commit()
        return rowcount(result) == 1

    def progress(self, lease: FineTuneLease, data: dict[str, Any]) -> None:
        with self.sql.session() as session:
            session.add(_event(lease.job.id, "progress", data))
            session.commit()

    def release(self, lease: FineTuneLease, *, step: int) -> bool:
        """Give the job back unfinished (preempted after a checkpoint): queued again, this try not counted."""
        values = {
            "status": "queued",
            "lease_token": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "attempts": FineTuneRow.attempts - 1,
            "step": step,
        }
        return self._end(lease, values, {"status": "queued", "reason": "preempted", "step": step})

    def succeed(self, lease: FineTuneLease, *, voice_id: str, report: dict[str, Any]) -> bool:
        values = {
            "status": "succeeded",
            "voice_id": voice_id,
            "report_json": _json(report),
            "step": lease.job.steps,
            "finished_at": utcnow(),
            "lease_expires_at": None,
        }
        return self._end(lease, values, {"status": "succeeded", "voice_id": voice_id})

    def fail(self, lease: FineTuneLease, code: str, message: str) -> bool:
        error = {"code": code, "message": message}
        values = {"status": "failed", "error_json": _json(error), "finished_at": utcnow(), "lease_expires_at": None}
        return self._end(lease, values, {"status": "failed", "error": error})

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _held(lease: FineTuneLease) -> Any:
        return and_(
            FineTuneRow.id == lease.job.id, FineTuneRow.status == "running", FineTuneRow.lease_token == lease.token
        )

    def _end(self, lease: FineTuneLease, values: dict[str, Any], event: dict[str, Any]) -> bool:
        with self.sql.session() as session:
            done = session.execute(update(FineTuneRow).where(self._held(lease)).values(**values))
            if rowcount(done) != 1:
                session.rollback()
                return False
            session.add(_event(lease.job.id, "status", event))
            session.commit()
        return True


def _event(fine_tune_id: str, kind: str, data: dict[str, Any]) -> FineTuneEventRow:
    return FineTuneEventRow(fine_tune_id=fine_tune_id, created_at=utcnow(), type=kind, data_json=_json(data))
