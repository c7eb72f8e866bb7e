"""Voice names: unique per tenant among READY voices, ignoring case.

0001 made (tenant_id, name) unique over every row, so a registration that crashed left a pending row holding
its name until the start-up sweep, and the retry got 409. Names now clash only with voices that exist, and
"Alice" and "alice" are one name (speech requests match voice names case-insensitively).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

READY = sa.text("status = 'ready'")


def upgrade() -> None:
    with op.batch_alter_table("voices") as batch:  # SQLite drops a constraint by copying the table
        batch.drop_constraint("uq_voices_tenant_name", type_="unique")
    op.create_index(
        "uq_voices_tenant_ready_name",
        "voices",
        ["tenant_id", sa.text("lower(name)")],
        unique=True,
        sqlite_where=READY,
        postgresql_where=READY,
    )
    op.create_index("ix_voices_tenant_name", "voices", ["tenant_id", "name"])


def downgrade() -> None:
    op.drop_index("ix_voices_tenant_name", table_name="voices")
    op.drop_index("uq_voices_tenant_ready_name", table_name="voices")
    with op.batch_alter_table("voices") as batch:
        batch.create_unique_constraint("uq_voices_tenant_name", ["tenant_id", "name"])
