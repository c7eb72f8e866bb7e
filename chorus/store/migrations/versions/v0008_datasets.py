"""Training datasets (chorus.store.datasets): one row each; the archive, manifest, report and speaker embedding are
blobs.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name="fk_datasets_tenant"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent_id", sa.String(40), nullable=True),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("archive_kind", sa.String(8), nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("archive_bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_clips", sa.Integer(), nullable=False),
        sa.Column("num_kept", sa.Integer(), nullable=False),
        sa.Column("speech_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_datasets_tenant_created", "datasets", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_datasets_tenant_created", table_name="datasets")
    op.drop_table("datasets")
