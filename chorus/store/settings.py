"""Where state lives: one SQL database and one blob root, both defaulting to the data dir.

Kept apart from ``chorus.config`` so that the storage layer can be opened (and tested) on its own; the server's
``Settings`` carries a ``StoreConfig`` under ``store:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from chorus.store.blobs import BlobStore, open_blob_store
from chorus.store.sql import SqlStore


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None = sqlite:///{data_dir}/chorus.db. PostgreSQL: postgresql+psycopg://user:pass@host/db
    # (postgresql:// and postgres:// are read as psycopg 3 too).
    database_url: str | None = None
    # None = file://{data_dir}/blobs. S3: s3://bucket/prefix.
    blob_url: str | None = None
    # S3 only. None = the standard sources (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    # ~/.aws, instance roles), so secrets need not sit in the config file.
    s3_endpoint_url: str | None = None
    s3_key: str | None = None
    s3_secret: SecretStr | None = None

    def resolved_database_url(self, data_dir: Path) -> str:
        return self.database_url or f"sqlite:///{data_dir / 'chorus.db'}"

    def resolved_blob_url(self, data_dir: Path) -> str:
        return self.blob_url or (data_dir / "blobs").resolve().as_uri()

    def s3_options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options; keys left unset fall back to botocore's own lookup."""
        options: dict[str, Any] = {}
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if self.s3_key:
            options["key"] = self.s3_key
        if self.s3_secret:
            options["secret"] = self.s3_secret.get_secret_value()
        return options


def open_store(config: StoreConfig, data_dir: Path, *, migrate: bool = True) -> tuple[SqlStore, BlobStore]:
    """Open the database (migrated to the latest schema unless ``migrate`` is False) and the blob store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sql = SqlStore(config.resolved_database_url(data_dir))
    try:
        if migrate:
            sql.migrate()
        blobs = open_blob_store(config.resolved_blob_url(data_dir), storage_options=config.s3_options())
    except BaseException:
        sql.close()
        raise
    return sql, blobs
