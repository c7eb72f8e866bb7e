"""Spoken consent: the challenges the server issued and the consents recorded against them (chorus.store.consents).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "consent_challenges",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name="fk_consent_challenges_tenant"), nullable=False
        ),
        sa.Column("phrase", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_consent_challenges_expires_at", "consent_challenges", ["expires_at"])
    op.create_table(
        "voice_consents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name="fk_voice_consents_tenant"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("challenge_id", sa.String(40), nullable=False),
        sa.Column("phrase", sa.String(200), nullable=False),
        sa.Column("recording_sha256", sa.String(64), nullable=False),
        sa.Column("recording_key", sa.String(512), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voice_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_voice_consents_tenant_id", "voice_consents", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_voice_consents_tenant_id", table_name="voice_consents")
    op.drop_table("voice_consents")
    op.drop_index("ix_consent_challenges_expires_at", table_name="consent_challenges")
    op.drop_table("consent_challenges")
