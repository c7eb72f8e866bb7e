"""The webhook outbox (events written by chorus.store.jobs) and tenants' signing secrets.

A dispatcher leases a due event (so two replicas never send it at the same moment), tries it, and records the
outcome: delivered; due again after a backoff; or dead once its attempts are spent (an admin may replay it).
A dispatcher killed mid-delivery leaves its lease to expire, and the event is sent again: delivery is at least
once, and the receiver dedupes on the event id (the ``webhook-id`` header).
"""

from __future__ import annotations

import builtins
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from chorus.errors import NotFoundError
from chorus.store.sql import SqlStore, rowcount
from chorus.store.tables import WebhookEventRow, WebhookSecretRow, utcnow
from chorus.store.tenants import ensure_tenant
from chorus.webhooks.signing import new_secret


class EventNotFoundError(NotFoundError):
    """No webhook event with this id (in the caller's tenant)."""


@dataclass(frozen=True)
class EventRecord:
    id: str
    tenant_id: str
    job_id: str
    type: str
    url: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status: int | None
    created_at: datetime
    delivered_at: datetime | None
    lease_token: str | None = None

    @classmethod
    def from_row(cls, row: WebhookEventRow) -> EventRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            job_id=row.job_id,
            type=row.type,
            url=row.url,
            payload=row.payload,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            last_status=row.last_status,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            lease_token=row.lease_token,
        )


class WebhookStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    # -- the outbox ------------------------------------------------------------------------------

    def claim_due(self, lease_s: float, *, now: datetime | None = None) -> EventRecord | None:
        """Lease the event that has been due longest (pending and due, or leased by a dispatcher that died)."""
        now = now or utcnow()
        due = or_(
            and_(WebhookEventRow.status == "pending", WebhookEventRow.lease_token.is_(None)),
            and_(WebhookEventRow.status == "pending", WebhookEventRow.lease_expires_at < now),
        )
        with self.sql.session() as session:
            for _ in range(8):
                row = session.scalars(
                    select(WebhookEventRow)
                    .where(due, WebhookEventRow.next_attempt_at <= now)
                    .order_by(WebhookEventRow.next_attempt_at, WebhookEventRow.id)
                    .limit(1)
                ).first()
                if row is None:
                    return None
                token = secrets.token_hex(16)
                taken = session.execute(
                    update(WebhookEventRow)
                    .where(WebhookEventRow.id == row.id, WebhookEventRow.attempts == row.attempts, due)
                    .values(lease_token=token, lease_expires_at=now + timedelta(seconds=lease_s))
                )
                if rowcount(taken) != 1:
                    session.rollback()
                    continue
                session.commit()
                session.refresh(row)
                return EventRecord.from_row(row)
        return None

    def record(
        self,
        event: EventRecord,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool:
        """The outcome of one attempt under the event's lease: delivered, due again at ``retry_at``, or dead
        (``retry_at`` None). False when the lease was no longer held (nothing recorded)."""
        now = utcnow()
        values: dict[str, Any] = {
            "attempts": WebhookEventRow.attempts + 1,
            "last_status": status,
            "last_error": (error or "")[:200] or None,
            "lease_token": None,
            "lease_expires_at": None,
        }
        if delivered:
            values.update(status="delivered", delivered_at=now)
        elif retry_at is not None:
            values.update(next_attempt_at=retry_at)
        else:
            values.update(status="dead")
        with self.sql.session() as session:
            result = session.execute(
                update(WebhookEventRow)
                .where(WebhookEventRow.id == event.id, WebhookEventRow.lease_token == event.lease_token)
                .values(**values)
            )
            session.commit()
        return rowcount(result) == 1

    def list(self, tenant_id: str | None, *, status: str | None = None, limit: int = 100) -> builtins.list[EventRecord]:
        """Events newest first: one tenant's (None: every tenant's, for an operator), optionally by status."""
        with self.sql.session() as session:
            query = select(WebhookEventRow)
            if tenant_id is not None:
                query = query.where(WebhookEventRow.tenant_id == tenant_id)
            if status is not None:
                query = query.where(WebhookEventRow.status == status)
            rows = session.scalars(
                query.order_by(WebhookEventRow.created_at.desc(), WebhookEventRow.id.desc()).limit(limit)
            )
            return [EventRecord.from_row(r) for r in rows]

    def replay(self, tenant_id: str | None, event_id: str) -> EventRecord:
        """Send a dead (or delivered) event again, with fresh attempts; same id, so the receiver can dedupe."""
        with self.sql.session() as session:
            row = session.get(WebhookEventRow, event_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise EventNotFoundError(f"no webhook event {event_id!r}", param="event_id")
            session.execute(
                update(WebhookEventRow)
                .where(WebhookEventRow.id == event_id, WebhookEventRow.status != "pending")
                .values(status="pending", attempts=0, next_attempt_at=utcnow(), lease_token=None, last_error=None)
            )
            session.commit()
            session.refresh(row)
            return EventRecord.from_row(row)

    def counts_by_status(self) -> dict[str, int]:
        with self.sql.session() as session:
            rows = session.execute(select(WebhookEventRow.status, func.count()).group_by(WebhookEventRow.status)).all()
        return {str(status): int(count) for status, count in rows}

    # -- signing secrets -------------------------------------------------------------------------

    def secret(self, tenant_id: str) -> WebhookSecretRow:
        """The tenant's secret, made on first use (safe when two replicas race)."""
        with self.sql.session() as session:
            row = session.get(WebhookSecretRow, tenant_id)
            if row is not None:
                return row
        ensure_tenant(self.sql, tenant_id)
        with self.sql.session() as session:
            session.add(WebhookSecretRow(tenant_id=tenant_id, secret=new_secret(), rotated_at=utcnow()))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
            row = session.get(WebhookSecretRow, tenant_id)
            assert row is not None
            return row

    def rotate(self, tenant_id: str, overlap_s: float) -> WebhookSecretRow:
        """A new secret; the old one still signs (a second signature) for ``overlap_s``, so receivers can switch."""
        current = self.secret(tenant_id)
        now = utcnow()
        with self.sql.session() as session:
            session.execute(
                update(WebhookSecretRow)
                .where(WebhookSecretRow.tenant_id == tenant_id)
                .values(
                    secret=new_secret(),
                    previous_secret=current.secret,
                    previous_until=now + timedelta(seconds=overlap_s),
                    rotated_at=now,
                )
            )
            session.commit()
            row = session.get(WebhookSecretRow, tenant_id)
            assert row is not None
            return row

    def signing_secrets(self, tenant_id: str, *, now: datetime | None = None) -> builtins.list[str]:
        """What signs the tenant's deliveries now: the secret, and the previous one during its overlap."""
        row = self.secret(tenant_id)
        now = now or utcnow()
        keys = [row.secret]
        if row.previous_secret and row.previous_until is not None and row.previous_until > now:
            keys.append(row.previous_secret)
        return keys
