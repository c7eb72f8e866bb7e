"""API keys: ``sk-chorus-<16 hex id>-<43 characters of secret>``, stored as the id and SHA-256 of the secret.

Why SHA-256 and not bcrypt/scrypt/Argon2: those slow hashes protect *low-entropy* secrets (passwords a person
chose) from guessing after a database leak. A key's secret is 256 random bits from ``secrets``: nobody can
enumerate that space whatever the hash costs, so a slow hash would only add tens of milliseconds to every
request. (GitHub and Stripe store their tokens the same way.) The id in the key finds the row without a scan;
the hashes are compared in constant time. The full key is shown once, by ``chorus keys create``; it is never
stored, logged or returned again.

Every request looks its key up (no cache), so a revocation takes effect at the next request, on every replica
that shares the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import func, select, update

from chorus.store.sql import SqlStore
from chorus.store.tables import ApiKeyRecord, ApiKeyRow, KeyRole, utcnow
from chorus.store.tenants import ensure_tenant

PREFIX = "sk-chorus-"
_KEY_RE = re.compile(r"sk-chorus-([0-9a-f]{16})-([A-Za-z0-9_-]{43})")
_ID_RE = re.compile(r"key_[0-9a-f]{16}")


class KeyRejected(Exception):
    """The key is malformed, unknown or revoked; ``reason`` is one of those words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def create(
        self, tenant_id: str, *, role: KeyRole = "user", max_concurrency: int | None = None
    ) -> tuple[str, ApiKeyRecord]:
        """A new key for the tenant (created if new): the full key, to show once, and its record."""
        if role not in ("admin", "user"):
            raise ValueError(f"role must be admin or user, not {role!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        ensure_tenant(self.sql, tenant_id)
        hex_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=f"key_{hex_id}",
            tenant_id=tenant_id,
            role=role,
            secret_sha256=_digest(secret),
            max_concurrency=max_concurrency,
            created_at=utcnow(),
            revoked_at=None,
        )
        with self.sql.session() as session:
            session.add(row)
            session.commit()
            record = ApiKeyRecord.from_row(row)
        return f"{PREFIX}{hex_id}-{secret}", record

    def authenticate(self, key: str) -> ApiKeyRecord:
        """The key's record; KeyRejected("malformed" | "unknown" | "revoked") otherwise."""
        match = _KEY_RE.fullmatch(key.strip())
        if match is None:
            raise KeyRejected("malformed")
        hex_id, secret = match.groups()
        with self.sql.session() as session:
            row = session.get(ApiKeyRow, f"key_{hex_id}")
            # Compare even when the id is unknown, so timing does not tell which ids exist.
            stored = row.secret_sha256 if row is not None else "0" * 64
            if not hmac.compare_digest(stored, _digest(secret)) or row is None:
                raise KeyRejected("unknown")
            if row.revoked_at is not None:
                raise KeyRejected("revoked")
            return ApiKeyRecord.from_row(row)

    def list(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        with self.sql.session() as session:
            query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            if tenant_id is not None:
                query = query.where(ApiKeyRow.tenant_id == tenant_id)
            return [ApiKeyRecord.from_row(r) for r in session.scalars(query)]

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke the key and return it as revoked; None when no such key exists. Revoking twice keeps the first
        time."""
        if not _ID_RE.fullmatch(key_id):
            return None
        with self.sql.session() as session:
            session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            session.commit()
            row = session.get(ApiKeyRow, key_id)
            return ApiKeyRecord.from_row(row) if row is not None else None

    def count_active(self) -> int:
        with self.sql.session() as session:
            return int(
                session.scalar(select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))) or 0
            )
