"""Consent challenges and recorded consents (SQL rows; each recording in the blob store).

A challenge is consumed by one atomic UPDATE (``used_at`` set only where it was unset and not yet expired), so
two attempts racing for one challenge, on one replica or two, cannot both use it. A consent is claimed for a
voice the same way (``voice_id`` set only where it was unset): a consent authorises one voice.
"""

from __future__ import annotations

import builtins
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, delete, select, update

from chorus.errors import ChorusError, NotFoundError
from chorus.store.blobs import BlobStore, sha256_hex
from chorus.store.sql import SqlStore
from chorus.store.tables import ChallengeRecord, ChallengeRow, ConsentRecord, ConsentRow, VoiceRow, utcnow
from chorus.store.tenants import check_tenant_id, ensure_tenant

ChallengeState = Literal["ok", "expired", "used", "unknown"]


class ConsentNotFoundError(NotFoundError):
    """No consent (or challenge) with this id in the caller's tenant; another tenant's reads the same."""


class ConsentInUseError(ChorusError):
    """The consent authorised a voice that still exists: delete the voice first."""

    status_code = 409
    error_type = "conflict_error"
    code = "consent_in_use"


def consent_prefix(tenant_id: str, consent_id: str) -> str:
    return f"consents/{tenant_id}/{consent_id}"


class ConsentStore:
    def __init__(self, sql: SqlStore, blobs: BlobStore) -> None:
        self.sql = sql
        self.blobs = blobs

    # -- challenges ------------------------------------------------------------------------------

    def issue(self, tenant_id: str, phrase: str, ttl_s: float) -> ChallengeRecord:
        check_tenant_id(tenant_id)
        ensure_tenant(self.sql, tenant_id)
        now = utcnow()
        row = ChallengeRow(
            id=f"chal_{secrets.token_hex(12)}",
            tenant_id=tenant_id,
            phrase=phrase,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            used_at=None,
        )
        with self.sql.session() as session:
            session.add(row)
            session.commit()
            return ChallengeRecord.from_row(row)

    def challenge(self, tenant_id: str, challenge_id: str) -> ChallengeRecord:
        with self.sql.session() as session:
            row = session.get(ChallengeRow, challenge_id)
            if row is None or row.tenant_id != tenant_id:
                raise ConsentNotFoundError(f"no challenge {challenge_id!r}", param="challenge_id")
            return ChallengeRecord.from_row(row)

    def use_challenge(self, tenant_id: str, challenge_id: str, *, now: datetime | None = None) -> ChallengeState:
        """Consume the challenge: "ok" when this call used it; else why not."""
        now = now or utcnow()
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(ChallengeRow)
                    .where(
                        ChallengeRow.id == challenge_id,
                        ChallengeRow.tenant_id == tenant_id,
                        ChallengeRow.used_at.is_(None),
                        ChallengeRow.expires_at > now,
                    )
                    .values(used_at=now)
                ),
            )
            session.commit()
            if result.rowcount == 1:
                return "ok"
            row = session.get(ChallengeRow, challenge_id)
        if row is None or row.tenant_id != tenant_id:
            return "unknown"
        return "used" if row.used_at is not None else "expired"

    def purge_challenges(self, older_than: timedelta) -> int:
        """Delete challenges that expired more than ``older_than`` ago (they can only be refused)."""
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(delete(ChallengeRow).where(ChallengeRow.expires_at < utcnow() - older_than)),
            )
            session.commit()
        return int(result.rowcount)

    # -- consents --------------------------------------------------------------------------------

    def create(
        self,
        tenant_id: str,
        *,
        name: str,
        language: str,
        challenge: ChallengeRecord,
        recording: bytes,
        embedding: bytes,
    ) -> ConsentRecord:
        """Store the recording, then the row (a crash between leaves an orphan blob, never a row without one)."""
        consent_id = f"cons_{secrets.token_hex(12)}"
        key = f"{consent_prefix(tenant_id, consent_id)}/recording"
        self.blobs.put(key, recording)
        row = ConsentRow(
            id=consent_id,
            tenant_id=tenant_id,
            name=name,
            language=language,
            challenge_id=challenge.id,
            phrase=challenge.phrase,
            recording_sha256=sha256_hex(recording),
            recording_key=key,
            embedding=embedding,
            created_at=utcnow(),
            voice_id=None,
        )
        try:
            with self.sql.session() as session:
                session.add(row)
                session.commit()
                return ConsentRecord.from_row(row)
        except BaseException:
            self.blobs.delete_prefix(consent_prefix(tenant_id, consent_id))
            raise

    def get(self, tenant_id: str, consent_id: str) -> ConsentRecord:
        with self.sql.session() as session:
            row = session.get(ConsentRow, consent_id)
            if row is None or row.tenant_id != tenant_id:
                raise ConsentNotFoundError(f"no consent {consent_id!r}", param="consent_id")
            return ConsentRecord.from_row(row)

    def list(self, tenant_id: str) -> builtins.list[ConsentRecord]:
        with self.sql.session() as session:
            rows = session.scalars(
                select(ConsentRow)
                .where(ConsentRow.tenant_id == tenant_id)
                .order_by(ConsentRow.created_at, ConsentRow.id)
            ).all()
            return [ConsentRecord.from_row(r) for r in rows]

    def claim(self, tenant_id: str, consent_id: str, voice_id: str) -> bool:
        """Give the consent to this voice; False when it is unknown to the tenant or another voice has it."""
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(ConsentRow)
                    .where(
                        ConsentRow.id == consent_id,
                        ConsentRow.tenant_id == tenant_id,
                        ConsentRow.voice_id.is_(None),
                    )
                    .values(voice_id=voice_id)
                ),
            )
            session.commit()
        return result.rowcount == 1

    def release(self, consent_id: str, voice_id: str) -> None:
        """Undo a claim whose voice was never made (its registration failed)."""
        with self.sql.session() as session:
            session.execute(
                update(ConsentRow)
                .where(ConsentRow.id == consent_id, ConsentRow.voice_id == voice_id)
                .values(voice_id=None)
            )
            session.commit()

    def release_orphans(self) -> int:
        """Release claims by voices that do not exist (a registration that crashed after claiming): run at
        start-up, after the voices' own sweep."""
        with self.sql.session() as session:
            ready = select(VoiceRow.id).where(VoiceRow.status == "ready")
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(ConsentRow)
                    .where(ConsentRow.voice_id.is_not(None), ConsentRow.voice_id.not_in(ready))
                    .values(voice_id=None)
                ),
            )
            session.commit()
        return int(result.rowcount)

    def delete(self, tenant_id: str, consent_id: str) -> ConsentRecord:
        """Remove the consent and its recording; refused while the voice it authorised exists."""
        record = self.get(tenant_id, consent_id)
        if record.voice_id is not None:
            with self.sql.session() as session:
                alive = session.scalar(select(VoiceRow.id).where(VoiceRow.id == record.voice_id))
            if alive is not None:
                raise ConsentInUseError(
                    f"consent {consent_id} authorised voice {record.voice_id}; delete that voice first",
                    param="consent_id",
                )
        with self.sql.session() as session:
            session.execute(delete(ConsentRow).where(ConsentRow.id == consent_id, ConsentRow.tenant_id == tenant_id))
            session.commit()
        self.blobs.delete_prefix(consent_prefix(tenant_id, consent_id))
        return record
