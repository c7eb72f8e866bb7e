"""ORM mapping of the tables (the schema itself is created by the Alembic migrations, not by ``create_all``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

VoiceStatus = Literal["pending", "ready"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends.

    PostgreSQL keeps the zone (timestamptz); SQLite stores naive text, so values are normalised to naive UTC on the
    way in and tagged UTC on the way out. Without this, comparisons in ``sweep_pending`` would mix naive and aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected an aware datetime, got {value!r}")
        moment: datetime = value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class VoiceRow(Base):
    __tablename__ = "voices"
    # Mirrors the migrations (so that autogenerate of a later revision starts from no difference).
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'ready')", name="ck_voices_status"),
        Index("ix_voices_status_created", "status", "created_at"),
        # Names are unique per tenant among ready voices, ignoring case (0002): a crashed registration's
        # pending row does not hold its name.
        Index(
            "uq_voices_tenant_ready_name",
            "tenant_id",
            text("lower(name)"),
            unique=True,
            sqlite_where=text("status = 'ready'"),
            postgresql_where=text("status = 'ready'"),
        ),
        Index("ix_voices_tenant_name", "tenant_id", "name"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_voices_tenant"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(32))
    ref_text: Mapped[str | None] = mapped_column(Text)
    # pending = not (or no longer) complete: invisible to readers and removed by sweep_pending.
    status: Mapped[str] = mapped_column(String(16))
    original_sha256: Mapped[str] = mapped_column(String(64))
    processed_sha256: Mapped[str] = mapped_column(String(64))
    original_key: Mapped[str] = mapped_column(String(512))
    processed_key: Mapped[str] = mapped_column(String(512))
    embedding_key: Mapped[str] = mapped_column(String(512))
    conversion_key: Mapped[str | None] = mapped_column(String(512))
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    consent_id: Mapped[str | None] = mapped_column(String(64))
    consent_status: Mapped[str] = mapped_column(String(16), default="none", server_default="none")


@dataclass(frozen=True)
class VoiceRecord:
    """A voice as it leaves the store: plain values, detached from any session."""

    id: str
    tenant_id: str
    name: str
    language: str
    ref_text: str | None
    status: VoiceStatus
    original_sha256: str
    processed_sha256: str
    original_key: str
    processed_key: str
    embedding_key: str
    conversion_key: str | None
    duration_s: float
    sample_rate: int
    created_at: datetime
    consent_id: str | None
    consent_status: str

    @classmethod
    def from_row(cls, row: VoiceRow) -> VoiceRecord:
        status: VoiceStatus = "ready" if row.status == "ready" else "pending"
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            language=row.language,
            ref_text=row.ref_text,
            status=status,
            original_sha256=row.original_sha256,
            processed_sha256=row.processed_sha256,
            original_key=row.original_key,
            processed_key=row.processed_key,
            embedding_key=row.embedding_key,
            conversion_key=row.conversion_key,
            duration_s=row.duration_s,
            sample_rate=row.sample_rate,
            created_at=row.created_at,
            consent_id=row.consent_id,
            consent_status=row.consent_status,
        )


KeyRole = Literal["admin", "user"]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("role IN ('admin', 'user')", name="ck_api_keys_role"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_api_keys_tenant"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key's random secret (see chorus.store.keys for why not a slow password hash).
    secret_sha256: Mapped[str] = mapped_column(String(64))
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as it leaves the store: never its secret, nor the secret's hash."""

    id: str
    tenant_id: str
    role: KeyRole
    max_concurrency: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKeyRecord:
        role: KeyRole = "admin" if row.role == "admin" else "user"
        return cls(row.id, row.tenant_id, role, row.max_concurrency, row.created_at, row.revoked_at)


class AuditRow(Base):
    """One row of the hash-chained audit trail (chorus.store.audit); never updated, deleted only by retention."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_seq", "tenant_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC text: hashed as stored, on every database
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))  # what the row is about: a voice, key or consent id
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChallengeRow(Base):
    """A phrase the server asked a speaker to say: valid until ``expires_at``, used at most once."""

    __tablename__ = "consent_challenges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_consent_challenges_tenant"))
    phrase: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class ChallengeRecord:
    id: str
    tenant_id: str
    phrase: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None

    @classmethod
    def from_row(cls, row: ChallengeRow) -> ChallengeRecord:
        return cls(row.id, row.tenant_id, row.phrase, row.created_at, row.expires_at, row.used_at)


class ConsentRow(Base):
    """A speaker's recorded consent: the phrase heard, the recording (a blob) and its speaker embedding; the
    voice it authorised once one used it (a consent authorises one voice)."""

    __tablename__ = "voice_consents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_voice_consents_tenant"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(32))
    challenge_id: Mapped[str] = mapped_column(String(40))
    phrase: Mapped[str] = mapped_column(String(200))
    recording_sha256: Mapped[str] = mapped_column(String(64))
    recording_key: Mapped[str] = mapped_column(String(512))
    embedding: Mapped[bytes] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    voice_id: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    tenant_id: str
    name: str
    language: str
    challenge_id: str
    phrase: str
    recording_sha256: str
    recording_key: str
    embedding: bytes
    created_at: datetime
    voice_id: str | None

    @classmethod
    def from_row(cls, row: ConsentRow) -> ConsentRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            language=row.language,
            challenge_id=row.challenge_id,
            phrase=row.phrase,
            recording_sha256=row.recording_sha256,
            recording_key=row.recording_key,
            embedding=row.embedding,
            created_at=row.created_at,
            voice_id=row.voice_id,
        )


class SecretRow(Base):
    """A server-wide secret, made once by whichever replica needs it first (chorus.store.secrets)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ItemStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
EventStatus = Literal["pending", "delivered", "dead"]


class JobRow(Base):
    """A batch job: items synthesised in the background (chorus.store.jobs)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_jobs_tenant"))
    key_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    item_count: Mapped[int] = mapped_column(Integer)
    metadata_json: Mapped[str] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class JobItemRow(Base):
    """One line of a job. A worker holds it by a lease (token + expiry) it renews while it works; a result is
    recorded only under the lease it was made with, so a lost lease cannot leave two results."""

    __tablename__ = "job_items"
    __table_args__ = (Index("ix_job_items_claim", "status", "queued_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", name="fk_job_items_job"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16))
    spec_json: Mapped[str] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str | None] = mapped_column(String(40))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    result_key: Mapped[str | None] = mapped_column(String(512))
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(64))
    audio_s: Mapped[float | None] = mapped_column(Float)
    error_json: Mapped[str | None] = mapped_column(Text)


class WebhookEventRow(Base):
    """The webhook outbox: an event is written in the transaction that ends its job, then delivered (at least
    once) until the receiver answers 2xx or the attempts run out (``dead``: an admin may replay it)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_due", "status", "next_attempt_at"),
        Index("ix_webhook_events_tenant", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the receiver's idempotency key
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_webhook_events_tenant"))
    job_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_token: Mapped[str | None] = mapped_column(String(40))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))
    last_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class WebhookSecretRow(Base):
    """A tenant's webhook signing secret; after a rotation the previous one still signs until ``previous_until``."""

    __tablename__ = "webhook_secrets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_webhook_secrets_tenant"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rotated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DatasetRow(Base):
    """A training dataset (chorus.store.datasets); its blobs are under datasets/{tenant}/{id}/."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_datasets_tenant"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # pending | ready
    consent_id: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(32))
    archive_kind: Mapped[str] = mapped_column(String(8))  # zip | tar
    archive_sha256: Mapped[str] = mapped_column(String(64))
    archive_bytes: Mapped[int] = mapped_column(BigInteger())
    num_clips: Mapped[int] = mapped_column(Integer)
    num_kept: Mapped[int] = mapped_column(Integer)
    speech_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class FineTuneRow(Base):
    """A fine-tune job (chorus.store.fine_tunes): held by one worker under a lease; checkpoints live in the blob
    store under ``fine_tunes/{tenant}/{id}/``, the finished adapter inside its voice's model."""

    __tablename__ = "fine_tunes"
    __table_args__ = (
        Index("ix_fine_tunes_tenant_created", "tenant_id", "created_at"),
        Index("ix_fine_tunes_claim", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_fine_tunes_tenant"))
    key_id: Mapped[str | None] = mapped_column(String(32))
    dataset_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | succeeded | failed | cancelled
    params_json: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer)  # steps done at the last checkpoint or renewal
    steps: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str | None] = mapped_column(String(40))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    voice_id: Mapped[str | None] = mapped_column(String(64))
    error_json: Mapped[str | None] = mapped_column(Text)
    report_json: Mapped[str | None] = mapped_column(Text)


class FineTuneEventRow(Base):
    """A fine-tune's log, in order: status changes and progress (step, loss, ETA) for ``GET …/events``."""

    __tablename__ = "fine_tune_events"
    __table_args__ = (Index("ix_fine_tune_events_job", "fine_tune_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fine_tune_id: Mapped[str] = mapped_column(ForeignKey("fine_tunes.id", name="fk_fine_tune_events_job"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    type: Mapped[str] = mapped_column(String(16))
    data_json: Mapped[str] = mapped_column(Text)


class ReplicaRow(Base):
    """One server's latest heartbeat: its slots and waiting queue, for fleet-wide queue positions and Retry-After.
    Times are epoch seconds from the writer's clock (replicas are assumed NTP-synchronised to well under a beat)."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    draining: Mapped[bool] = mapped_column()
    max_slots: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer)
    waiting: Mapped[int] = mapped_column(Integer)
    newcomer_wait_s: Mapped[float] = mapped_column(Float)  # a newcomer's predicted wait for a slot here
    waiting_since_json: Mapped[str] = mapped_column(Text)  # JSON list: arrival (epoch s) of each waiting request
