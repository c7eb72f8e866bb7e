"""Cloned voices: metadata in SQL, audio and embeddings in the blob store.

A voice is visible only when its metadata and blobs are both complete. ``create`` inserts the row as "pending",
writes the blobs under ``voices/{tenant}/{voice_id}/``, then flips the row to "ready" in one UPDATE; readers only
ever see "ready" rows. A process that dies in between leaves a pending row (and maybe some blobs) that no reader
sees and that ``sweep_pending`` removes at the next start-up. ``delete`` runs the same steps backwards.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from chorus.errors import InvalidRequestError
from chorus.store.blobs import BlobStore, sha256_hex
from chorus.store.errors import TenantNotFoundError, VoiceExistsError, VoiceNotFoundError
from chorus.store.sql import SqlStore
from chorus.store.tables import VoiceRecord, VoiceRow, utcnow
from chorus.store.tenants import check_tenant_id, tenant_exists

log = logging.getLogger(__name__)

# Called as hook(stage, voice_id) at each step of create(): "row_inserted", "blob_written:<kind>", "blobs_written".
# Tests use it to stop (and kill) a process between two steps; production passes None.
StageHook = Callable[[str, str], None]
MAX_NAME_LEN = 200


def new_voice_id() -> str:
    return f"voice_{secrets.token_hex(12)}"


def voice_prefix(tenant_id: str, voice_id: str) -> str:
    return f"voices/{tenant_id}/{voice_id}"


class VoiceStore:
    def __init__(self, sql: SqlStore, blobs: BlobStore, *, on_stage: StageHook | None = None) -> None:
        self.sql = sql
        self.blobs = blobs
        self._on_stage = on_stage

    def create(
        self,
        tenant_id: str,
        name: str,
        language: str,
        ref_text: str | None,
        original: bytes,
        processed: bytes,
        embedding: bytes,
        *,
        duration_s: float,
        sample_rate: int,
        conversion: bytes | None = None,
        voice_id: str | None = None,
        consent_id: str | None = None,
    ) -> VoiceRecord:
        """Store a new voice (under ``voice_id`` when the caller chose it: see ``new_voice_id``), with the consent
        that authorised it; VoiceExistsError (409) if the tenant already has one by this name."""
        check_tenant_id(tenant_id)
        if not name.strip() or len(name) > MAX_NAME_LEN:
            raise InvalidRequestError(f"voice name must be 1-{MAX_NAME_LEN} characters", param="name")
        if not language or len(language) > 32:
            raise InvalidRequestError("language must be 1-32 characters", param="language")
        voice_id = voice_id or new_voice_id()
        prefix = voice_prefix(tenant_id, voice_id)
        payloads = {"original": original, "processed": processed, "embedding": embedding}
        if conversion is not None:
            payloads["conversion"] = conversion
        row = VoiceRow(
            id=voice_id,
            tenant_id=tenant_id,
            name=name,
            language=language,
            ref_text=ref_text,
            status="pending",
            original_sha256=sha256_hex(original),
            processed_sha256=sha256_hex(processed),
            original_key=f"{prefix}/original",
            processed_key=f"{prefix}/processed",
            embedding_key=f"{prefix}/embedding",
            conversion_key=f"{prefix}/conversion" if conversion is not None else None,
            duration_s=float(duration_s),
            sample_rate=int(sample_rate),
            created_at=utcnow(),
            consent_id=consent_id,
            consent_status="verified" if consent_id is not None else "none",
        )
        self._insert(row)
        self._stage("row_inserted", voice_id)
        try:
            for kind, data in payloads.items():
                self.blobs.put(f"{prefix}/{kind}", data)
                self._stage(f"blob_written:{kind}", voice_id)
            self._stage("blobs_written", voice_id)
            if not self._set_status(voice_id, "pending", "ready"):
                # Only a sweep on another process removes a pending row: this create took longer than its cut-off.
                raise RuntimeError(f"voice {voice_id} was swept while being created")
        except BaseException:
            self._discard(tenant_id, voice_id)
            raise
        return dataclasses.replace(VoiceRecord.from_row(row), status="ready")

    def list(self, tenant_id: str) -> builtins.list[VoiceRecord]:
        """The tenant's ready voices, oldest first."""
        with self.sql.session() as session:
            rows = session.scalars(
                select(VoiceRow)
                .where(VoiceRow.tenant_id == tenant_id, VoiceRow.status == "ready")
                .order_by(VoiceRow.created_at, VoiceRow.id)
            ).all()
        return [VoiceRecord.from_row(r) for r in rows]

    def count(self) -> int:
        """Ready voices across tenants (for /metrics)."""
        with self.sql.session() as session:
            return int(session.scalar(select(func.count()).where(VoiceRow.status == "ready")) or 0)

    def get(self, tenant_id: str, voice_id: str) -> VoiceRecord:
        """A ready voice of this tenant; VoiceNotFoundError (404) otherwise, whoever else owns the id."""
        with self.sql.session() as session:
            row = session.scalar(
                select(VoiceRow).where(
                    VoiceRow.id == voice_id, VoiceRow.tenant_id == tenant_id, VoiceRow.status == "ready"
                )
            )
        if row is None:
            raise VoiceNotFoundError(f"no voice {voice_id!r}", param="voice_id")
        return VoiceRecord.from_row(row)

    def find_by_name(self, tenant_id: str, name: str) -> VoiceRecord | None:
        """The tenant's ready voice of this name, ignoring case, if any (names are unique per tenant)."""
        with self.sql.session() as session:
            row = session.scalar(
                select(VoiceRow).where(
                    VoiceRow.tenant_id == tenant_id,
                    func.lower(VoiceRow.name) == name.lower(),
                    VoiceRow.status == "ready",
                )
            )
        return None if row is None else VoiceRecord.from_row(row)

    def read_blob(self, record: VoiceRecord, kind: str) -> bytes:
        """One of the voice's blobs: "original", "processed", "embedding" or "conversion"."""
        key = {
            "original": record.original_key,
            "processed": record.processed_key,
            "embedding": record.embedding_key,
            "conversion": record.conversion_key,
        }.get(kind)
        if key is None:
            raise KeyError(f"voice {record.id} has no {kind} blob")
        return self.blobs.get(key)

    def delete(self, tenant_id: str, voice_id: str) -> None:
        """Hide the voice (back to pending), remove its blobs, then its row. A crash half-way leaves a pending row
        for the sweep, never a visible voice with missing blobs."""
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(VoiceRow)
                    .where(VoiceRow.id == voice_id, VoiceRow.tenant_id == tenant_id, VoiceRow.status == "ready")
                    .values(status="pending")
                ),
            )
            session.commit()
        if result.rowcount != 1:
            raise VoiceNotFoundError(f"no voice {voice_id!r}", param="voice_id")
        self._remove(tenant_id, voice_id)

    def sweep_pending(self, older_than_s: float) -> builtins.list[str]:
        """Remove pending voices created more than ``older_than_s`` ago (left by a crash); return their ids.

        Run at start-up. On several replicas, keep the cut-off well above the longest create, since a younger
        pending row may be another process's create in progress.
        """
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.sql.session() as session:
            query = select(VoiceRow.tenant_id, VoiceRow.id)
            stale = session.execute(query.where(VoiceRow.status == "pending", VoiceRow.created_at < cutoff)).all()
        for tenant_id, voice_id in stale:
            log.warning("removing incomplete voice %s of tenant %s", voice_id, tenant_id)
            self._remove(tenant_id, voice_id)
        return [voice_id for _, voice_id in stale]

    def _insert(self, row: VoiceRow) -> None:
        if self.find_by_name(row.tenant_id, row.name) is not None:  # checked again, atomically, at "ready"
            raise VoiceExistsError(f"a voice named {row.name!r} already exists", param="name")
        with self.sql.session() as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                if not tenant_exists(self.sql, row.tenant_id):
                    raise TenantNotFoundError(f"no tenant {row.tenant_id!r}") from None
                raise

    def _set_status(self, voice_id: str, old: str, new: str) -> bool:
        """Move the row from ``old`` to ``new``; False if it was not in ``old``. VoiceExistsError when it would
        become a second ready voice of its name (two registrations of one name raced; the later one loses)."""
        with self.sql.session() as session:
            try:
                result = cast(
                    CursorResult[Any],
                    session.execute(
                        update(VoiceRow).where(VoiceRow.id == voice_id, VoiceRow.status == old).values(status=new)
                    ),
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                raise VoiceExistsError("a voice of this name was registered meanwhile", param="name") from None
        return result.rowcount == 1

    def _remove(self, tenant_id: str, voice_id: str) -> None:
        """Blobs first, then the (pending) row: each step can be repeated if the process dies."""
        self.blobs.delete_prefix(voice_prefix(tenant_id, voice_id))
        with self.sql.session() as session:
            session.execute(delete(VoiceRow).where(VoiceRow.id == voice_id, VoiceRow.status == "pending"))
            session.commit()

    def _discard(self, tenant_id: str, voice_id: str) -> None:
        """Best-effort clean-up after a failed create; what it misses, sweep_pending gets."""
        try:
            self._remove(tenant_id, voice_id)
        except Exception:
            log.exception("could not clean up incomplete voice %s; sweep_pending will", voice_id)

    def _stage(self, stage: str, voice_id: str) -> None:
        if self._on_stage is not None:
            self._on_stage(stage, voice_id)
