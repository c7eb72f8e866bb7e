"""Batch jobs in SQL: jobs, their items under leases, and the webhook outbox row written when a job ends.

Workers (any replica) claim an item with one conditional UPDATE: queued, or running under a lease that expired
(its worker died: SIGKILL, a lost machine). While it works, the worker renews the lease. Its result is stored
under a blob key of its own lease token and recorded only where the row still carries that token, so a worker
that lost its lease cannot overwrite the result of the one that took over: an item has at most one result.

The transaction that records an item's end also ends the job when it was the last one, and writes the job's
webhook event (the outbox) in that same transaction: the event exists if and only if the job ended, whichever
process crashes when.
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from chorus.errors import ChorusError, NotFoundError
from chorus.store.blobs import BlobStore, sha256_hex
from chorus.store.sql import SqlStore, rowcount
from chorus.store.tables import TERMINAL, JobItemRow, JobRow, WebhookEventRow, utcnow
from chorus.store.tenants import check_tenant_id, ensure_tenant


class JobNotFoundError(NotFoundError):
    """No job (or item) with this id in the caller's tenant; another tenant's reads the same."""


class JobConflictError(ChorusError):
    status_code = 409
    error_type = "conflict_error"
    code = "job_not_cancellable"


@dataclass(frozen=True)
class ItemRecord:
    job_id: str
    n: int
    status: str
    spec: dict[str, Any]
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    result_key: str | None
    result_sha256: str | None
    content_type: str | None
    audio_s: float | None
    error: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: JobItemRow) -> ItemRecord:
        return cls(
            job_id=row.job_id,
            n=row.n,
            status=row.status,
            spec=json.loads(row.spec_json),
            attempts=row.attempts,
            started_at=row.started_at,
            finished_at=row.finished_at,
            result_key=row.result_key,
            result_sha256=row.result_sha256,
            content_type=row.content_type,
            audio_s=row.audio_s,
            error=json.loads(row.error_json) if row.error_json else None,
        )


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant_id: str
    key_id: str | None
    status: str
    item_count: int
    metadata: dict[str, Any]
    webhook_url: str | None
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]  # items by status

    @classmethod
    def from_row(cls, row: JobRow, counts: dict[str, int]) -> JobRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            key_id=row.key_id,
            status=row.status,
            item_count=row.item_count,
            metadata=json.loads(row.metadata_json),
            webhook_url=row.webhook_url,
            created_at=row.created_at,
            finished_at=row.finished_at,
            counts=counts,
        )


@dataclass(frozen=True)
class Lease:
    """An item a worker holds: renew it before ``expires_at``; record its end under ``token``."""

    job_id: str
    n: int
    tenant_id: str
    token: str
    attempt: int
    spec: dict[str, Any]
    expires_at: datetime


def job_prefix(tenant_id: str, job_id: str) -> str:
    return f"jobs/{tenant_id}/{job_id}"


class JobStore:
    def __init__(self, sql: SqlStore, blobs: BlobStore) -> None:
        self.sql = sql
        self.blobs = blobs

    # -- callers ---------------------------------------------------------------------------------

    def create(
        self,
        tenant_id: str,
        items: Sequence[dict[str, Any]],
        *,
        key_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> JobRecord:
        check_tenant_id(tenant_id)
        ensure_tenant(self.sql, tenant_id)
        now = utcnow()
        job = JobRow(
            id=f"job_{secrets.token_hex(12)}",
            tenant_id=tenant_id,
            key_id=key_id,
            status="queued",
            item_count=len(items),
            metadata_json=json.dumps(metadata or {}, separators=(",", ":")),
            webhook_url=webhook_url,
            created_at=now,
            finished_at=None,
        )
        with self.sql.session() as session:
            session.add(job)
            session.flush()  # the job row before its items (their foreign key), in one transaction
            session.add_all(
                JobItemRow(
                    job_id=job.id,
                    n=n,
                    status="queued",
                    spec_json=json.dumps(spec, separators=(",", ":")),
                    queued_at=now,
                    attempts=0,
                )
                for n, spec in enumerate(items)
            )
            session.commit()
        return JobRecord.from_row(job, {"queued": len(items)})

    def get(self, tenant_id: str, job_id: str) -> JobRecord:
        with self.sql.session() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.tenant_id != tenant_id:
                raise JobNotFoundError(f"no job {job_id!r}", param="job_id")
            return JobRecord.from_row(row, self._counts(session, [job_id]).get(job_id, {}))

    def list(self, tenant_id: str, *, limit: int = 100, before: str | None = None) -> list[JobRecord]:
        """The tenant's jobs, newest first; ``before``: a job id, for the next page."""
        with self.sql.session() as session:
            query = select(JobRow).where(JobRow.tenant_id == tenant_id)
            if before is not None:
                anchor = session.get(JobRow, before)
                if anchor is None or anchor.tenant_id != tenant_id:
                    raise JobNotFoundError(f"no job {before!r}", param="before")
                query = query.where(
                    or_(
                        JobRow.created_at < anchor.created_at,
                        and_(JobRow.created_at == anchor.created_at, JobRow.id < anchor.id),
                    )
                )
            rows = session.scalars(query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)).all()
            counts = self._counts(session, [r.id for r in rows])
            return [JobRecord.from_row(r, counts.get(r.id, {})) for r in rows]

    def items(self, tenant_id: str, job_id: str) -> builtins.list[ItemRecord]:
        self.get(tenant_id, job_id)
        with self.sql.session() as session:
            rows = session.scalars(select(JobItemRow).where(JobItemRow.job_id == job_id).order_by(JobItemRow.n))
            return [ItemRecord.from_row(r) for r in rows]

    def item(self, tenant_id: str, job_id: str, n: int) -> ItemRecord:
        self.get(tenant_id, job_id)
        with self.sql.session() as session:
            row = session.get(JobItemRow, (job_id, n))
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} has no item {n}", param="n")
            return ItemRecord.from_row(row)

    def cancel(self, tenant_id: str, job_id: str) -> JobRecord:
        """Cancel what has not ended: queued and running items (a running one's worker sees its lease gone and
        stops); the job ends ``cancelled`` with its webhook event. 409 when the job had already ended."""
        now = utcnow()
        with self.sql.session() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.tenant_id != tenant_id:
                raise JobNotFoundError(f"no job {job_id!r}", param="job_id")
            ended = update(JobRow).where(JobRow.id == job_id, JobRow.status.not_in(TERMINAL))
            if rowcount(session.execute(ended.values(status="cancelled", finished_at=now))) != 1:
                session.rollback()
                raise JobConflictError(f"job {job_id!r} has already ended ({row.status})", param="job_id")
            session.execute(
                update(JobItemRow)
                .where(JobItemRow.job_id == job_id, JobItemRow.status.not_in(TERMINAL))
                .values(status="cancelled", finished_at=now, lease_token=None, lease_expires_at=None)
            )
            self._add_event(session, row, "job.cancelled")
            session.commit()
        return self.get(tenant_id, job_id)

    def result(self, tenant_id: str, job_id: str, n: int) -> tuple[ItemRecord, bytes]:
        item = self.item(tenant_id, job_id, n)
        if item.status != "succeeded" or item.result_key is None:
            raise JobNotFoundError(f"item {n} of job {job_id!r} has no audio (it is {item.status})", param="n")
        return item, self.blobs.get(item.result_key)

    # -- workers ---------------------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float, max_attempts: int, *, now: datetime | None = None) -> Lease | None:
        """Take the oldest item that is queued or whose lease expired. An item whose workers died
        ``max_attempts`` times (it may be what kills them) fails instead of being tried again."""
        now = now or utcnow()
        claimable = or_(
            JobItemRow.status == "queued",
            and_(JobItemRow.status == "running", JobItemRow.lease_expires_at < now),
        )
        with self.sql.session() as session:
            for _ in range(8):  # another worker may take the candidate between the SELECT and the UPDATE
                row = session.scalars(
                    select(JobItemRow).where(claimable).order_by(JobItemRow.queued_at, JobItemRow.n).limit(1)
                ).first()
                if row is None:
                    return None
                job_id, n, attempts = row.job_id, row.n, row.attempts
                if attempts >= max_attempts:
                    error = {"code": "worker_lost", "message": f"its worker stopped {attempts} times while on it"}
                    self._end(
                        session,
                        job_id,
                        n,
                        and_(JobItemRow.attempts == attempts, claimable),
                        "failed",
                        error=error,
                        now=now,
                    )
                    session.commit()
                    continue
                token = secrets.token_hex(16)
                expires = now + timedelta(seconds=lease_s)
                taken = session.execute(
                    update(JobItemRow)
                    .where(JobItemRow.job_id == job_id, JobItemRow.n == n, JobItemRow.attempts == attempts, claimable)
                    .values(
                        status="running",
                        lease_token=token,
                        lease_owner=owner[:128],
                        lease_expires_at=expires,
                        attempts=attempts + 1,
                        started_at=now,
                    )
                )
                if rowcount(taken) != 1:
                    session.rollback()
                    continue
                session.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued").values(status="running")
                )
                session.commit()
                tenant = session.scalar(select(JobRow.tenant_id).where(JobRow.id == job_id))
                return Lease(job_id, n, str(tenant), token, attempts + 1, json.loads(row.spec_json), expires)
        return None

    def renew(self, lease: Lease, lease_s: float) -> bool:
        """Extend the lease; False when it is no longer this worker's (expired and taken, or cancelled)."""
        with self.sql.session() as session:
            result = session.execute(
                update(JobItemRow)
                .where(
                    JobItemRow.job_id == lease.job_id,
                    JobItemRow.n == lease.n,
                    JobItemRow.lease_token == lease.token,
                    JobItemRow.status == "running",
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
            session.commit()
        return rowcount(result) == 1

    def release(self, lease: Lease) -> None:
        """Give the item back unfinished (a draining server, a full engine): queued again, this try not counted."""
        self._requeue(JobItemRow.job_id == lease.job_id, JobItemRow.n == lease.n, JobItemRow.lease_token == lease.token)

    def succeed(self, lease: Lease, audio: bytes, *, extension: str, content_type: str, audio_s: float) -> bool:
        """Store the result under this lease's own key, then record it if the lease still holds; else remove the
        blob (the item is someone else's now) and return False."""
        key = f"{job_prefix(lease.tenant_id, lease.job_id)}/{lease.n}-{lease.token}.{extension}"
        self.blobs.put(key, audio)
        result = {
            "result_key": key,
            "result_sha256": sha256_hex(audio),
            "content_type": content_type,
            "audio_s": audio_s,
        }
        with self.sql.session() as session:
            recorded = self._end(session, lease.job_id, lease.n, self._held(lease), "succeeded", result=result)
            session.commit()
        if not recorded:
            self.blobs.delete(key)
        return recorded

    def fail(self, lease: Lease, code: str, message: str) -> bool:
        with self.sql.session() as session:
            error = {"code": code, "message": message}
            recorded = self._end(session, lease.job_id, lease.n, self._held(lease), "failed", error=error)
            session.commit()
        return recorded

    def release_owner(self, owner: str) -> int:
        """Give back every item this worker holds (a server draining on SIGTERM): others take them at once."""
        return self._requeue(JobItemRow.lease_owner == owner[:128], JobItemRow.status == "running")

    def _requeue(self, *where: Any) -> int:
        """Queue the items ``where`` selects again, their lease dropped and the try not counted."""
        with self.sql.session() as session:
            result = session.execute(
                update(JobItemRow)
                .where(*where)
                .values(
                    status="queued",
                    lease_token=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=JobItemRow.attempts - 1,
                )
            )
            session.commit()
        return rowcount(result)

    def counts_by_status(self) -> dict[str, int]:
        """Jobs by status across tenants (for /metrics)."""
        with self.sql.session() as session:
            rows = session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        return {str(status): int(count) for status, count in rows}

    # -- internals -------------------------------------------------------------------------------

    def _counts(self, session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        if not job_ids:
            return {}
        rows = session.execute(
            select(JobItemRow.job_id, JobItemRow.status, func.count())
            .where(JobItemRow.job_id.in_(job_ids))
            .group_by(JobItemRow.job_id, JobItemRow.status)
        ).all()
        counts: dict[str, dict[str, int]] = {}
        for job_id, status, count in rows:
            counts.setdefault(str(job_id), {})[str(status)] = int(count)
        return counts

    @staticmethod
    def _held(lease: Lease) -> Any:
        return and_(JobItemRow.status == "running", JobItemRow.lease_token == lease.token)

    def _end(
        self,
        session: Session,
        job_id: str,
        n: int,
        holds: Any,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Record an item's end where ``holds`` (its lease, or that it is still claimable); end the job with its
        event if no item is left. False (rolled back) when the item was not this caller's to end."""
        now = now or utcnow()
        values: dict[str, Any] = {"status": status, "finished_at": now, "lease_expires_at": None}
        values.update(result or {})
        if error is not None:
            values["error_json"] = json.dumps(error, separators=(",", ":"))
        ended = session.execute(
            update(JobItemRow).where(JobItemRow.job_id == job_id, JobItemRow.n == n, holds).values(**values)
        )
        if rowcount(ended) != 1:
            session.rollback()
            return False
        left = session.scalar(
            select(func.count()).where(JobItemRow.job_id == job_id, JobItemRow.status.not_in(TERMINAL))
        )
        if not left:
            failed = session.scalar(
                select(func.count()).where(JobItemRow.job_id == job_id, JobItemRow.status == "failed")
            )
            outcome = "failed" if failed else "succeeded"
            done = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.not_in(TERMINAL))
                .values(status=outcome, finished_at=now)
            )
            job = session.get(JobRow, job_id)
            if rowcount(done) == 1 and job is not None:
                session.refresh(job)
                self._add_event(session, job, f"job.{outcome}")
        return True

    def _add_event(self, session: Session, job: JobRow, kind: str) -> None:
        """The job's webhook event, in the transaction that ended it; its body is the job as it ended (the
        receiver reads the items with GET /v1/jobs/{id})."""
        if job.webhook_url is None:
            return
        event_id = f"evt_{secrets.token_hex(12)}"
        now = utcnow()
        session.flush()
        counts = self._counts(session, [job.id]).get(job.id, {})
        data = {
            "id": job.id,
            "object": "job",
            "status": job.status,
            "items": {"total": job.item_count, **counts},
            "metadata": json.loads(job.metadata_json),
            "created_at": int(job.created_at.timestamp()),
            "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        }
        payload = {"id": event_id, "type": kind, "created_at": int(now.timestamp()), "data": data}
        session.add(
            WebhookEventRow(
                id=event_id,
                tenant_id=job.tenant_id,
                job_id=job.id,
                type=kind,
                url=job.webhook_url,
                payload=json.dumps(payload, separators=(",", ":")),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
