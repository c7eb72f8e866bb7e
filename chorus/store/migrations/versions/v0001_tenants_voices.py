"""Tenants (with the "default" tenant) and voices.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "voices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name="fk_voices_tenant"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("ref_text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("original_sha256", sa.String(64), nullable=False),
        sa.Column("processed_sha256", sa.String(64), nullable=False),
        sa.Column("original_key", sa.String(512), nullable=False),
        sa.Column("processed_key", sa.String(512), nullable=False),
        sa.Column("embedding_key", sa.String(512), nullable=False),
        sa.Column("conversion_key", sa.String(512), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("consent_status", sa.String(16), nullable=False, server_default="none"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_voices_tenant_name"),
        sa.CheckConstraint("status IN ('pending', 'ready')", name="ck_voices_status"),
    )
    op.create_index("ix_voices_tenant_id", "voices", ["tenant_id"])
    # sweep_pending looks for old pending rows.
    op.create_index("ix_voices_status_created", "voices", ["status", "created_at"])
    # Stored naive on SQLite, like every UtcDateTime value (see chorus.store.tables).
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(tenants, [{"id": "default", "name": "Default tenant", "created_at": now}])


def downgrade() -> None:
    op.drop_index("ix_voices_status_created", table_name="voices")
    op.drop_index("ix_voices_tenant_id", table_name="voices")
    op.drop_table("voices")
    op.drop_table("tenants")
