"""Blob store on a local dir and on S3 (SeaweedFS): the same contract on both."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chorus.store import BlobStore, InvalidKeyError, LocalBlobStore, open_blob_store
from chorus.store.blobs import FsspecBlobStore


def test_put_get_exists_delete(blob_store: BlobStore) -> None:
    data = b"\x00RIFF" + bytes(range(256)) * 40
    assert blob_store.put("voices/t/v1/processed", data) == hashlib.sha256(data).hexdigest()
    assert blob_store.exists("voices/t/v1/processed")
    assert blob_store.get("voices/t/v1/processed") == data
    blob_store.put("voices/t/v1/processed", b"new")  # replace
    assert blob_store.get("voices/t/v1/processed") == b"new"
    blob_store.delete("voices/t/v1/processed")
    assert not blob_store.exists("voices/t/v1/processed")
    blob_store.delete("voices/t/v1/processed")  # already gone: no error
    with pytest.raises(FileNotFoundError):
        blob_store.get("voices/t/v1/processed")


def test_delete_prefix_is_a_folder(blob_store: BlobStore) -> None:
    for key in ("a/b/x", "a/b/y/z", "a/bc/x", "a/c"):
        blob_store.put(key, key.encode())
    blob_store.delete_prefix("a/b")
    assert [blob_store.exists(k) for k in ("a/b/x", "a/b/y/z", "a/bc/x", "a/c")] == [False, False, True, True]
    blob_store.delete_prefix("a/b/")  # nothing left there: no error
    blob_store.delete_prefix("nothing/here")
    assert blob_store.get("a/bc/x") == b"a/bc/x"


def test_a_folder_is_not_a_blob(blob_store: BlobStore) -> None:
    blob_store.put("d/e/f", b"1")
    assert not blob_store.exists("d/e")
    assert not blob_store.exists("d")


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "../up", "a/../b", "a/./b", "a//b", ".hidden", "a/.f.tmp", "a b", "a\\b", "ä", "a/", "x" * 513],
)
def test_bad_keys_are_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        blob_store.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        blob_store.get(key)
    with pytest.raises(InvalidKeyError):
        blob_store.delete_prefix(key if key != "a/" else "/a")


def test_local_store_stays_under_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put("voices/x/y", b"1")
    assert (tmp_path / "root" / "voices" / "x" / "y").read_bytes() == b"1"
    assert {p.name for p in (tmp_path / "root" / "voices" / "x").iterdir()} == {"y"}  # no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_open_blob_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_blob_store((tmp_path / "a").as_uri()), LocalBlobStore)
    plain = open_blob_store(str(tmp_path / "b"))
    assert isinstance(plain, LocalBlobStore)
    assert plain.url == (tmp_path / "b").as_uri()
    with pytest.raises(ValueError, match="local path"):
        open_blob_store("file://otherhost/x")
    with pytest.raises(ValueError, match="bucket"):
        open_blob_store("s3:///prefix")
    assert isinstance(open_blob_store("memory://chorus-test"), FsspecBlobStore)
