"""Training datasets: one SQL row each, and four blobs under ``datasets/{tenant}/{dataset_id}/``.

Blobs: ``archive`` (the upload, as it came), ``manifest`` (JSON: the clips kept for training, by archive member,
with their text), ``report`` (JSON: the validation report) and ``embedding`` (``.npy``: the speaker's mean
embedding over the clips checked against the consent).

As with voices, a dataset is visible only once its row and every blob are written: ``create`` inserts the row as
"pending", writes the blobs, then flips it to "ready"; ``delete`` hides it (back to pending), removes the blobs,
then the row. A process that dies half-way leaves a pending row that ``sweep_pending`` removes at start-up.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, and_, delete, or_, select, update

from chorus.errors import NotFoundError
from chorus.store.blobs import BlobStore, sha256_hex
from chorus.store.sql import SqlStore
from chorus.store.tables import DatasetRow, utcnow
from chorus.store.tenants import check_tenant_id, ensure_tenant

log = logging.getLogger(__name__)
BlobKind = Literal["archive", "manifest", "report", "embedding"]


class DatasetNotFoundError(NotFoundError):
    """No ready dataset with this id in the caller's tenant (another tenant's reads the same)."""


def dataset_prefix(tenant_id: str, dataset_id: str) -> str:
    return f"datasets/{tenant_id}/{dataset_id}"


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    id: str
    tenant_id: str
    name: str
    consent_id: str | None
    language: str
    archive_kind: str
    archive_sha256: str
    archive_bytes: int
    num_clips: int
    num_kept: int
    speech_s: float
    created_at: datetime

    @classmethod
    def from_row(cls, row: DatasetRow) -> DatasetRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            consent_id=row.consent_id,
            language=row.language,
            archive_kind=row.archive_kind,
            archive_sha256=row.archive_sha256,
            archive_bytes=row.archive_bytes,
            num_clips=row.num_clips,
            num_kept=row.num_kept,
            speech_s=row.speech_s,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class DatasetBlobs:
    archive: bytes
    manifest: bytes
    report: bytes
    embedding: bytes


class DatasetStore:
    def __init__(self, sql: SqlStore, blobs: BlobStore) -> None:
        self.sql = sql
        self.blobs = blobs

    def create(
        self,
        tenant_id: str,
        *,
        name: str,
        consent_id: str | None,
        language: str,
        archive_kind: str,
        content: DatasetBlobs,
        num_clips: int,
        num_kept: int,
        speech_s: float,
    ) -> DatasetRecord:
        check_tenant_id(tenant_id)
        ensure_tenant(self.sql, tenant_id)
        row = DatasetRow(
            id=f"ds_{secrets.token_hex(12)}",
            tenant_id=tenant_id,
            name=name,
            status="pending",
            consent_id=consent_id,
            language=language,
            archive_kind=archive_kind,
            archive_sha256=sha256_hex(content.archive),
            archive_bytes=len(content.archive),
            num_clips=num_clips,
            num_kept=num_kept,
            speech_s=float(speech_s),
            created_at=utcnow(),
        )
        record = DatasetRecord.from_row(row)
        with self.sql.session() as session:
            session.add(row)
            session.commit()
        try:
            prefix = dataset_prefix(tenant_id, record.id)
            for kind in ("archive", "manifest", "report", "embedding"):
                self.blobs.put(f"{prefix}/{kind}", getattr(content, kind))
            if not self._set_status(record.id, "pending", "ready"):
                raise RuntimeError(f"dataset {record.id} was swept while being created")
        except BaseException:
            self._discard(tenant_id, record.id)
            raise
        return record

    def get(self, tenant_id: str, dataset_id: str) -> DatasetRecord:
        with self.sql.session() as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None or row.tenant_id != tenant_id or row.status != "ready":
                raise DatasetNotFoundError(f"no dataset {dataset_id!r}", param="dataset_id")
            return DatasetRecord.from_row(row)

    def list(self, tenant_id: str, *, limit: int = 100, before: str | None = None) -> builtins.list[DatasetRecord]:
        """The tenant's datasets, newest first; ``before``: a dataset id, for the next page."""
        with self.sql.session() as session:
            query = select(DatasetRow).where(DatasetRow.tenant_id == tenant_id, DatasetRow.status == "ready")
            if before is not None:
                anchor = session.get(DatasetRow, before)
                if anchor is None or anchor.tenant_id != tenant_id:
                    raise DatasetNotFoundError(f"no dataset {before!r}", param="before")
                query = query.where(
                    or_(
                        DatasetRow.created_at < anchor.created_at,
                        and_(DatasetRow.created_at == anchor.created_at, DatasetRow.id < anchor.id),
                    )
                )
            order = (DatasetRow.created_at.desc(), DatasetRow.id.desc())
            rows = session.scalars(query.order_by(*order).limit(limit)).all()
            return [DatasetRecord.from_row(r) for r in rows]

    def read_blob(self, record: DatasetRecord, kind: BlobKind) -> bytes:
        return self.blobs.get(f"{dataset_prefix(record.tenant_id, record.id)}/{kind}")

    def delete(self, tenant_id: str, dataset_id: str) -> DatasetRecord:
        """Hide the dataset, remove its blobs, then its row (a crash half-way leaves a pending row for the sweep)."""
        record = self.get(tenant_id, dataset_id)
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(DatasetRow)
                    .where(DatasetRow.id == dataset_id, DatasetRow.tenant_id == tenant_id, DatasetRow.status == "ready")
                    .values(status="pending")
                ),
            )
            session.commit()
        if result.rowcount != 1:  # deleted meanwhile
            raise DatasetNotFoundError(f"no dataset {dataset_id!r}", param="dataset_id")
        self._remove(tenant_id, dataset_id)
        return record

    def sweep_pending(self, older_than_s: float) -> builtins.list[str]:
        """Remove datasets left pending by a crash more than ``older_than_s`` ago (run at start-up)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.sql.session() as session:
            query = select(DatasetRow.tenant_id, DatasetRow.id)
            stale = session.execute(query.where(DatasetRow.status == "pending", DatasetRow.created_at < cutoff)).all()
        for tenant_id, dataset_id in stale:
            log.warning("removing incomplete dataset %s of tenant %s", dataset_id, tenant_id)
            self._remove(tenant_id, dataset_id)
        return [dataset_id for _, dataset_id in stale]

    def _set_status(self, dataset_id: str, old: str, new: str) -> bool:
        with self.sql.session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(DatasetRow).where(DatasetRow.id == dataset_id, DatasetRow.status == old).values(status=new)
                ),
            )
            session.commit()
        return result.rowcount == 1

    def _remove(self, tenant_id: str, dataset_id: str) -> None:
        self.blobs.delete_prefix(dataset_prefix(tenant_id, dataset_id))
        with self.sql.session() as session:
            session.execute(delete(DatasetRow).where(DatasetRow.id == dataset_id, DatasetRow.status == "pending"))
            session.commit()

    def _discard(self, tenant_id: str, dataset_id: str) -> None:
        try:
            self._remove(tenant_id, dataset_id)
        except Exception:
            log.exception("could not clean up incomplete dataset %s; sweep_pending will", dataset_id)
