"""Reading an uploaded training dataset: a .zip or .tar.gz holding audio files and a ``metadata.csv``.

The layout is Hugging Face's audiofolder (also how LJSpeech-style corpora are usually repackaged): a
``metadata.csv`` whose header row names the columns ``file_name`` and ``text`` (others are ignored), with
``file_name`` relative to the folder ``metadata.csv`` is in::

    my-voice/metadata.csv          file_name,text
    my-voice/wavs/0001.wav         wavs/0001.wav,The first sentence.

Nothing is extracted to disk: members are read into memory one at a time, from the archive's bytes. Still,
every entry is checked, and the whole archive refused (400, ``error.code`` naming the problem) when one is unsafe
or the archive is out of bounds, since such an archive was made by mistake or on purpose:

- names: no absolute paths, drive letters, ``..`` segments, backslashes or NUL (``unsafe_path``); no entry
  named twice (``duplicate_member``);
- kinds: regular files and folders only; symlinks, hard links, devices, FIFOs (``unsafe_member``) and
  encrypted zip entries (``encrypted``) are refused;
- bounds (zip bombs): the members' total uncompressed size is held to the same limit as the upload
  (``finetune.max_dataset_bytes``, 413 ``too_large``), checked from the zip's central directory before anything
  is inflated, and from the tar headers as the stream is read (the decompressed stream itself is counted too, so
  oversized tar headers cannot inflate past it); at most ``finetune.max_dataset_clips`` audio files and rows
  (``too_many_clips``) and that many plus ``EXTRA_ENTRIES`` entries of any kind (``too_many_files``), the zip's
  entry count read from its end record before its directory is parsed.

Hidden files and macOS resource forks (``__MACOSX/``, ``._*``) are ignored.
"""

from __future__ import annotations

import csv
import gzip
import io
import posixpath
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import IO, Literal

from chorus.errors import InvalidRequestError

ArchiveKind = Literal["zip", "tar"]
# fmt: off
ArchiveErrorCode = Literal[
    "not_an_archive", "corrupt_archive", "too_large", "too_many_files", "too_many_clips", "unsafe_path",
    "unsafe_member", "encrypted", "duplicate_member", "no_metadata", "ambiguous_metadata", "bad_metadata",
]
# fmt: on

METADATA_NAME = "metadata.csv"
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm"})
# Entries besides the clips (metadata.csv, folders, a README, …) an archive may hold.
EXTRA_ENTRIES = 256
TAR_BLOCK = 512
_DRIVE = re.compile(r"^[A-Za-z]:")
# Errors the archive libraries raise for damaged or hostile data (gzip.BadGzipFile is an OSError).
# fmt: off
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError,
                NotImplementedError, struct.error)
# fmt: on


class DatasetArchiveError(InvalidRequestError):
    """The archive was refused as a whole; ``code`` says why."""

    def __init__(self, code: ArchiveErrorCode, message: str) -> None:
        super().__init__(message, param="archive")
        self.code: ArchiveErrorCode = code
        if code == "too_large":
            self.status_code = 413


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_bytes: int  # the upload, and the members' total uncompressed size
    max_clips: int  # audio files, and metadata rows

    @property
    def max_entries(self) -> int:
        return self.max_clips + EXTRA_ENTRIES


@dataclass(frozen=True, slots=True)
class MetadataRow:
    file_name: str  # normalised, relative to metadata.csv's folder
    text: str
    line: int  # in metadata.csv, for messages


@dataclass(frozen=True)
class ArchiveIndex:
    """What an archive holds: its metadata rows and its audio files (by name relative to ``root``, the folder
    of metadata.csv, e.g. ``"my-voice/"``; audio outside that folder keeps its full name)."""

    kind: ArchiveKind
    root: str
    rows: tuple[MetadataRow, ...]
    audio: dict[str, str]  # file_name -> member name, in archive order


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str  # normalised
    is_dir: bool
    size: int


def index_archive(data: bytes, limits: ArchiveLimits) -> ArchiveIndex:
    """Check every entry and read metadata.csv; no audio is read. Raises DatasetArchiveError."""
    kind = archive_kind(data)
    candidates: dict[str, bytes] = {}
    entries: list[_Entry] = []
    try:
        if kind == "zip":
            with zipfile.ZipFile(_zip_checked(data, limits)) as archive:
                infos = archive.infolist()
                entries = [_zip_entry(info) for info in infos]
                _check_entries(entries, limits)
                for info, entry in zip(infos, entries, strict=True):
                    if _is_metadata(entry):
                        candidates[entry.name] = _read_zip_member(archive, info.filename)
        else:
            for entry, member in _tar_stream(data, limits, collect=entries):
                if _is_metadata(entry):
                    candidates[entry.name] = _read_bounded(member, entry)
            _check_entries(entries, limits)
    except _READ_ERRORS as e:
        raise DatasetArchiveError("corrupt_archive", f"the {kind} archive could not be read: {e}") from e
    metadata = _pick_metadata(sorted(candidates))
    root = posixpath.dirname(metadata) + "/" if "/" in metadata else ""
    rows = parse_metadata(candidates[metadata], limits, where=metadata)
    audio = {_relative(e.name, root): e.name for e in entries if _is_audio(e)}
    if len(audio) > limits.max_clips:
        raise DatasetArchiveError(
            "too_many_clips", f"the archive holds {len(audio)} audio files; at most {limits.max_clips}"
        )
    return ArchiveIndex(kind=kind, root=root, rows=rows, audio=audio)


def read_members(
    data: bytes, kind: ArchiveKind, names: Collection[str], limits: ArchiveLimits
) -> Iterator[tuple[str, bytes]]:
    """The bytes of the named members (normalised names, as in ``ArchiveIndex.audio``), one at a time, in
    archive order. Raises DatasetArchiveError when the archive is damaged."""
    wanted = set(names)
    try:
        if kind == "zip":
            with zipfile.ZipFile(_zip_checked(data, limits)) as archive:
                for info in archive.infolist():
                    name = _zip_entry(info).name
                    if name in wanted and not info.is_dir():
                        yield name, _read_zip_member(archive, info.filename)
        else:
            for entry, member in _tar_stream(data, limits):
                if entry.name in wanted:
                    yield entry.name, _read_bounded(member, entry)
    except _READ_ERRORS as e:
        raise DatasetArchiveError("corrupt_archive", f"the {kind} archive could not be read: {e}") from e


def archive_kind(data: bytes) -> ArchiveKind:
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar":
        return "tar"
    raise DatasetArchiveError("not_an_archive", "the archive must be a .zip or a .tar.gz (or .tar) file")


def parse_metadata(content: bytes, limits: ArchiveLimits, *, where: str = METADATA_NAME) -> tuple[MetadataRow, ...]:
    """metadata.csv's rows: a header naming ``file_name`` and ``text``, then one row per clip."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetArchiveError("bad_metadata", f"{where} is not UTF-8 text: {e}") from e
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[MetadataRow] = []
    try:
        header = next((r for r in reader if any(f.strip() for f in r)), None)
        if header is None:
            raise DatasetArchiveError("bad_metadata", f"{where} is empty; it needs the header row file_name,text")
        columns = [h.strip().lower() for h in header]
        if "file_name" not in columns or "text" not in columns:
            hint = " (LJSpeech's pipe-separated metadata needs converting)" if "|" in ",".join(header) else ""
            raise DatasetArchiveError(
                "bad_metadata",
                f"{where}'s first row must be the header file_name,text{hint}; found {','.join(header)[:120]!r}",
            )
        name_at, text_at = columns.index("file_name"), columns.index("text")
        for row in reader:
            if not any(f.strip() for f in row):
                continue
            line = reader.line_num
            if len(row) <= max(name_at, text_at):
                raise DatasetArchiveError(
                    "bad_metadata", f"{where} line {line}: {len(row)} columns where the header has {len(header)}"
                )
            if len(rows) >= limits.max_clips:
                raise DatasetArchiveError("too_many_clips", f"{where} has more than {limits.max_clips} rows")
            rows.append(MetadataRow(_metadata_file_name(row[name_at], where, line), row[text_at].strip(), line))
    except csv.Error as e:
        raise DatasetArchiveError("bad_metadata", f"{where} line {reader.line_num}: {e}") from e
    return tuple(rows)


def safe_name(name: str) -> str:
    """``name`` with ``.`` and empty segments dropped; DatasetArchiveError for a name that could leave the
    archive's folder when extracted (or that no extractor reads the same way on every system)."""
    if "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise DatasetArchiveError("unsafe_path", f"the archive entry {name!r} has an absolute or unsafe path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetArchiveError("unsafe_path", f"the archive entry {name!r} points outside the archive (..)")
    return "/".join(parts)


# -- entries ---------------------------------------------------------------------------------------


def _check_entries(entries: list[_Entry], limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise DatasetArchiveError(
            "too_many_files", f"the archive holds {len(entries)} entries; at most {limits.max_entries}"
        )
    total = sum(e.size for e in entries)
    if total > limits.max_bytes:
        raise DatasetArchiveError(
            "too_large",
            f"the archive's files add up to {total / 2**20:.1f} MiB uncompressed; "
            f"at most {limits.max_bytes / 2**20:.1f} MiB",
        )
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen and not entry.is_dir:
            raise DatasetArchiveError("duplicate_member", f"the archive holds {entry.name!r} twice")
        seen.add(entry.name)


def _is_ignored(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _is_metadata(entry: _Entry) -> bool:
    return not entry.is_dir and not _is_ignored(entry.name) and posixpath.basename(entry.name).lower() == METADATA_NAME


def _is_audio(entry: _Entry) -> bool:
    return (
        not entry.is_dir
        and not _is_ignored(entry.name)
        and posixpath.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS
    )


def _pick_metadata(names: list[str]) -> str:
    """The shallowest metadata.csv (a dataset's own, not one of a nested copy); two at one depth are ambiguous."""
    if not names:
        raise DatasetArchiveError(
            "no_metadata", f"the archive has no {METADATA_NAME} (a header row file_name,text, then one row per clip)"
        )
    depth = min(n.count("/") for n in names)
    top = [n for n in names if n.count("/") == depth]
    if len(top) > 1:
        raise DatasetArchiveError("ambiguous_metadata", f"the archive has several {METADATA_NAME}: {', '.join(top)}")
    return top[0]


def _relative(name: str, root: str) -> str:
    return name[len(root) :] if name.startswith(root) else name


def _metadata_file_name(value: str, where: str, line: int) -> str:
    raw = value.strip()
    if not raw:
        raise DatasetArchiveError("bad_metadata", f"{where} line {line}: file_name is empty")
    try:
        return safe_name(raw)
    except DatasetArchiveError as e:
        raise DatasetArchiveError(
            "unsafe_path", f"{where} line {line}: file_name {raw!r} points outside the dataset's folder"
        ) from e


# -- zip -------------------------------------------------------------------------------------------


def _zip_checked(data: bytes, limits: ArchiveLimits) -> IO[bytes]:
    """The zip's bytes as a file, once its end record says it has no more entries than allowed (so that a
    directory of millions of entries is never parsed)."""
    stated = _zip_entry_count(data)
    if stated is not None and stated > limits.max_entries:
        raise DatasetArchiveError("too_many_files", f"the archive holds {stated} entries; at most {limits.max_entries}")
    return io.BytesIO(data)


def _zip_entry_count(data: bytes) -> int | None:
    """Entries the end-of-central-directory record states (zip64's when the classic field is saturated)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, end + 10)
    locator = end - 20
    if count == 0xFFFF and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        (offset,) = struct.unpack_from("<Q", data, locator + 8)
        if data[offset : offset + 4] == b"PK\x06\x06" and offset + 56 <= len(data):
            (count,) = struct.unpack_from("<Q", data, offset + 32)
    return int(count)


def _zip_entry(info: zipfile.ZipInfo) -> _Entry:
    name = safe_name(info.filename)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):  # Unix attributes are set
        what = "a symbolic link" if kind == stat.S_IFLNK else "not a regular file"
        raise DatasetArchiveError("unsafe_member", f"the archive entry {info.filename!r} is {what}")
    if info.flag_bits & 0x1:
        raise DatasetArchiveError("encrypted", f"the archive entry {info.filename!r} is encrypted")
    return _Entry(name, info.is_dir(), info.file_size)


def _read_zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    with archive.open(info) as member:
        return _read_bounded(member, _Entry(name, False, info.file_size))


def _read_bounded(member: IO[bytes] | None, entry: _Entry) -> bytes:
    """A member's bytes, never more than its stated size (zipfile also stops there, and checks the CRC)."""
    if member is None:
        raise DatasetArchiveError("corrupt_archive", f"the archive entry {entry.name!r} could not be read")
    data = member.read(entry.size + 1)
    if len(data) != entry.size:
        raise DatasetArchiveError("corrupt_archive", f"the archive entry {entry.name!r} is not its stated size")
    return data


# -- tar -------------------------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """A forward-only view of the (decompressed) tar stream that stops at ``limit`` bytes."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise DatasetArchiveError(
                "too_large", f"the archive is over {self.limit / 2**20:.1f} MiB once decompressed"
            )
        buffer[: len(data)] = data
        return len(data)


def _tar_stream(
    data: bytes, limits: ArchiveLimits, *, collect: list[_Entry] | None = None
) -> Iterator[tuple[_Entry, IO[bytes] | None]]:
    """Every regular file of a tar (or tar.gz), read forward once: (entry, its data while it is current)."""
    raw: IO[bytes] | gzip.GzipFile = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    # Headers (and their padding) are counted besides the members: three blocks per entry is ample.
    counted = _CountingReader(raw, limits.max_bytes + 3 * TAR_BLOCK * (limits.max_entries + 2))
    total = 0
    entries = 0
    with tarfile.open(fileobj=counted, mode="r|") as archive:
        for member in archive:
            entries += 1
            if entries > limits.max_entries:
                raise DatasetArchiveError("too_many_files", f"the archive holds over {limits.max_entries} entries")
            name = safe_name(member.name)
            if not (member.isreg() or member.isdir()):
                what = "a link" if member.issym() or member.islnk() else "not a regular file"
                raise DatasetArchiveError("unsafe_member", f"the archive entry {member.name!r} is {what}")
            total += member.size
            if total > limits.max_bytes:
                raise DatasetArchiveError(
                    "too_large", f"the archive's files are over {limits.max_bytes / 2**20:.1f} MiB uncompressed"
                )
            entry = _Entry(name, member.isdir(), member.size if member.isreg() else 0)
            if collect is not None:
                collect.append(entry)
            if member.isreg():
                yield entry, archive.extractfile(member)
