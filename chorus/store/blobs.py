"""Blob store: bytes under keys, below one root URL (``file://…`` by default, ``s3://bucket/prefix`` to scale out).

Keys are built by chorus (``voices/{tenant}/{voice_id}/processed``), never taken from a client; they are still checked,
so that a bug cannot write outside the root. Writes are atomic: a reader sees the old object, the new one, or none,
never a torn one.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import fsspec

# Segments start with a letter, digit, "_" or "-": no "..", no ".", no hidden names (the local store's temp files).
_KEY_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
MAX_KEY_LEN = 512


class InvalidKeyError(ValueError):
    """A key that could escape the root or is not one chorus builds: a programming error, not a client error."""


def check_key(key: str) -> str:
    if len(key) > MAX_KEY_LEN or not _KEY_RE.fullmatch(key):
        raise InvalidKeyError(f"invalid blob key {key!r}: want [A-Za-z0-9_./-] segments, no '..' or leading '/'")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore(abc.ABC):
    """Keys are '/'-separated; a prefix names a folder (``delete_prefix("a/b")`` spares ``a/bc``)."""

    url: str

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing any old object atomically); return its sha256 (hex)."""
        self._put(check_key(key), data)
        return sha256_hex(data)

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        return self._get(check_key(key))

    def exists(self, key: str) -> bool:
        return self._exists(check_key(key))

    def delete(self, key: str) -> None:
        """Remove one object; no error if it is already gone (so that clean-up can be retried)."""
        self._delete(check_key(key))

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under the folder ``prefix``; no error if there is none."""
        self._delete_prefix(check_key(prefix.removesuffix("/")))

    @abc.abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _delete_prefix(self, prefix: str) -> None: ...


class LocalBlobStore(BlobStore):
    """A folder on a local disk.

    A write goes to a hidden temp file in the target's folder, is fsync'ed, then renamed over the target with
    ``os.replace`` (atomic within one file system), and the folder is fsync'ed so that the rename survives a power
    cut. A writer killed mid-way leaves the old object (or none) plus a hidden ``.*.tmp`` file, which no key can name
    and ``delete_prefix`` removes with the rest.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r} in {self.url}")
        return path.read_bytes()

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if not path.is_dir():
            path.unlink(missing_ok=True)

    def _delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_file():
            path.unlink(missing_ok=True)
            return
        # Two processes may clean up the same voice at once (sweeps on two replicas): rmtree stops at the first file
        # the other one removed, so go again until the folder is gone.
        for _ in range(10):
            try:
                shutil.rmtree(path)
                return
            except FileNotFoundError:
                if not path.exists():
                    return


class FsspecBlobStore(BlobStore):
    """Any fsspec file system; in practice S3 (s3fs) and S3-compatible stores (MinIO, SeaweedFS, R2).

    Atomicity comes from S3 itself: an object becomes visible only when its PUT completes (s3fs sends one PUT up to
    its 50 MB chunk size, a multipart upload above it, visible only on CompleteMultipartUpload), and a replaced
    object is swapped whole. Listings are not cached, since other replicas write to the same bucket.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def _get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def _exists(self, key: str) -> bool:
        return bool(self.fs.isfile(self._path(key)))

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def _delete_prefix(self, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(prefix), recursive=True)


def open_blob_store(url: str, *, storage_options: dict[str, Any] | None = None) -> BlobStore:
    """A store for ``url``: ``file:///abs/path`` (or a plain path) → local folder; anything else → fsspec."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"blob URL {url!r}: file URLs must name a local path (file:///abs/path)")
        return LocalBlobStore(Path(url2pathname(parsed.path) if parsed.scheme else url))
    options = dict(storage_options or {})
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ValueError(f"blob URL {url!r} names no bucket (s3://bucket/prefix)")
        options.setdefault("use_listings_cache", False)
        options.setdefault("skip_instance_cache", True)
    fs, root = fsspec.url_to_fs(url, **options)
    return FsspecBlobStore(fs, str(root), url)
