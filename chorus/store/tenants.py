"""Tenants: every voice (and later key, job, adapter) belongs to one. Migration 0001 creates the "default" tenant."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chorus.store.sql import SqlStore
from chorus.store.tables import TenantRow, utcnow

DEFAULT_TENANT = "default"
# Tenant ids become a segment of blob keys (voices/{tenant}/...), so they keep to the key alphabet.
_TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_tenant_id(tenant_id: str) -> str:
    if not _TENANT_RE.fullmatch(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}: want 1-64 of [A-Za-z0-9_-]")
    return tenant_id


def ensure_tenant(sql: SqlStore, tenant_id: str, name: str | None = None) -> None:
    """Create the tenant unless it exists (safe when two processes do it at once)."""
    check_tenant_id(tenant_id)
    with sql.session() as session:
        if session.get(TenantRow, tenant_id) is not None:
            return
        session.add(TenantRow(id=tenant_id, name=name or tenant_id, created_at=utcnow()))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.get(TenantRow, tenant_id) is None:
                raise


def tenant_exists(sql: SqlStore, tenant_id: str) -> bool:
    with sql.session() as session:
        return session.scalar(select(TenantRow.id).where(TenantRow.id == tenant_id)) is not None
