"""Persistence: SQL (SQLAlchemy; SQLite by default, PostgreSQL to scale out) and blobs (fsspec: local dir, S3)."""

from __future__ import annotations

from chorus.store.blobs import BlobStore, FsspecBlobStore, InvalidKeyError, LocalBlobStore, open_blob_store
from chorus.store.errors import TenantNotFoundError, VoiceExistsError, VoiceNotFoundError
from chorus.store.settings import StoreConfig, open_store
from chorus.store.sql import SqlStore, make_engine
from chorus.store.tables import VoiceRecord
from chorus.store.tenants import DEFAULT_TENANT, ensure_tenant
from chorus.store.voices import VoiceStore

__all__ = [
    "DEFAULT_TENANT",
    "BlobStore",
    "FsspecBlobStore",
    "InvalidKeyError",
    "LocalBlobStore",
    "SqlStore",
    "StoreConfig",
    "TenantNotFoundError",
    "VoiceExistsError",
    "VoiceNotFoundError",
    "VoiceRecord",
    "VoiceStore",
    "ensure_tenant",
    "make_engine",
    "open_blob_store",
    "open_store",
]
