"""StoreConfig defaults and URLs, and open_store as the server calls it at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from chorus.store import LocalBlobStore, StoreConfig, VoiceStore, open_blob_store, open_store
from chorus.store.sql import head_revision, normalize_url
from tests.store.fixtures import S3Target


def test_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    sql, blobs = open_store(StoreConfig(), tmp_path / "data")
    assert sql.dialect == "sqlite" and sql.url.database == str(tmp_path / "data" / "chorus.db")
    assert sql.current_revision() == head_revision()
    assert isinstance(blobs, LocalBlobStore) and blobs.root == (tmp_path / "data" / "blobs").resolve()
    record = VoiceStore(sql, blobs).create("default", "v", "en", None, b"o", b"p", b"e", duration_s=1, sample_rate=8000)
    assert (tmp_path / "data" / "blobs" / record.processed_key).read_bytes() == b"p"
    sql.close()


def test_postgres_urls_use_psycopg3() -> None:
    for url in ("postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"):
        assert normalize_url(url).drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_s3_options_and_secret_hiding() -> None:
    assert StoreConfig().s3_options() == {}  # botocore finds AWS_* variables, ~/.aws and instance roles itself
    config = StoreConfig(s3_endpoint_url="http://127.0.0.1:1", s3_key="k", s3_secret=SecretStr("s3cr3t"))
    assert config.s3_options() == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"},
        "key": "k",
        "secret": "s3cr3t",
    }
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.model_dump())
    with pytest.raises(ValueError):
        StoreConfig(blob_ur="typo")  # type: ignore[call-arg]


def test_s3_credentials_are_checked(s3_target: S3Target) -> None:
    """The test S3 server enforces its identity, so the S3 tests really exercise signed requests."""
    options = {"key": s3_target.key, "secret": "wrong", "client_kwargs": {"endpoint_url": s3_target.endpoint}}
    store = open_blob_store(f"s3://{s3_target.bucket}/auth", storage_options=options)
    with pytest.raises(PermissionError):
        store.put("x", b"1")
