"""Fine-tune jobs and their event log (chorus.store.fine_tunes).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "fine_tunes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name="fk_fine_tunes_tenant"), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("dataset_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(40), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voice_id", sa.String(64), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("report_json", sa.Text(), nullable=True),
    )
    op.create_index("ix_fine_tunes_tenant_created", "fine_tunes", ["tenant_id", "created_at"])
    op.create_index("ix_fine_tunes_claim", "fine_tunes", ["status", "created_at"])
    op.create_table(
        "fine_tune_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "fine_tune_id",
            sa.String(40),
            sa.ForeignKey("fine_tunes.id", name="fk_fine_tune_events_job"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_fine_tune_events_job", "fine_tune_events", ["fine_tune_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_fine_tune_events_job", table_name="fine_tune_events")
    op.drop_table("fine_tune_events")
    op.drop_index("ix_fine_tunes_claim", table_name="fine_tunes")
    op.drop_index("ix_fine_tunes_tenant_created", table_name="fine_tunes")
    op.drop_table("fine_tunes")
