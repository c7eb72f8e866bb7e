"""Reading dataset archives: the audiofolder layout in a zip or a tar.gz, and every unsafe or oversized archive
refused with a code that names the problem (no audio is needed: entries are bytes)."""

from __future__ import annotations

import csv
import io
import stat
import tarfile
import zipfile
from collections.abc import Callable, Sequence

import pytest

from chorus.finetune.dataset_archive import ArchiveLimits, DatasetArchiveError, index_archive, read_members

LIMITS = ArchiveLimits(max_bytes=1 << 20, max_clips=8)


def metadata(rows: list[tuple[str, str]], header: str = "file_name,text") -> bytes:
    out = io.StringIO()
    out.write(header + "\n")
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def zipped(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A deflated zip of ``files``; ``links``: symlink entries (name -> target), as zip stores them on Unix."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()


def tarred(files: dict[str, bytes], *, extra: Sequence[tarfile.TarInfo] = (), gz: bool = True) -> bytes:
    """A tar (gzip-compressed unless ``gz`` is off) of ``files``, plus ``extra`` header-only members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return out.getvalue()


def member(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def refusal(data: bytes, limits: ArchiveLimits = LIMITS) -> tuple[str, int, str]:
    with pytest.raises(DatasetArchiveError) as caught:
        index_archive(data, limits)
    return caught.value.code, caught.value.status_code, caught.value.message


GOOD = {
    "my-voice/metadata.csv": metadata([("wavs/a.wav", "First line."), ("./wavs/b.wav", "Second, with a comma.")]),
    "my-voice/wavs/a.wav": b"A" * 100,
    "my-voice/wavs/b.wav": b"B" * 50,
    "my-voice/wavs/c.flac": b"C",  # in no row
    "my-voice/README.txt": b"notes",
    "__MACOSX/my-voice/wavs/._a.wav": b"resource fork",
    "my-voice/.hidden.wav": b"hidden",
}


@pytest.mark.parametrize("pack", [zipped, tarred, lambda f: tarred(f, gz=False)], ids=["zip", "tar.gz", "tar"])
def test_an_audiofolder_archive_is_indexed_and_read(pack: Callable[[dict[str, bytes]], bytes]) -> None:
    data = pack(GOOD)
    index = index_archive(data, LIMITS)
    assert index.root == "my-voice/"
    rows = [(r.file_name, r.text) for r in index.rows]
    assert rows == [("wavs/a.wav", "First line."), ("wavs/b.wav", "Second, with a comma.")]
    assert index.audio == {f: f"my-voice/{f}" for f in ("wavs/a.wav", "wavs/b.wav", "wavs/c.flac")}
    read = dict(read_members(data, index.kind, ["my-voice/wavs/b.wav", "my-voice/wavs/a.wav"], LIMITS))
    assert read == {"my-voice/wavs/a.wav": b"A" * 100, "my-voice/wavs/b.wav": b"B" * 50}


def test_the_shallowest_metadata_wins_and_its_header_may_have_more_columns() -> None:
    files = {"metadata.csv": b"speaker,TEXT,file_name\nada,Hi.,x.wav\n", "x.wav": b"x", "old/metadata.csv": b"\x00"}
    index = index_archive(zipped(files), LIMITS)
    assert index.root == "" and [(r.file_name, r.text, r.line) for r in index.rows] == [("x.wav", "Hi.", 2)]


@pytest.mark.parametrize(
    ("files", "code", "says"),
    [
        ({"a.wav": b"a"}, "no_metadata", "metadata.csv"),
        ({"metadata.csv": b"a.wav|Hello\n", "a.wav": b"a"}, "bad_metadata", "LJSpeech"),
        ({"metadata.csv": b"path,sentence\na.wav,Hello\n"}, "bad_metadata", "file_name,text"),
        ({"metadata.csv": b"file_name,text\na.wav\n"}, "bad_metadata", "line 2"),
        ({"metadata.csv": b"file_name,text\n\xff\xfe,x\n"}, "bad_metadata", "UTF-8"),
        ({"metadata.csv": metadata([("../x.wav", "Out.")])}, "unsafe_path", "line 2"),
        ({"metadata.csv": metadata([]), "../x.wav": b"x"}, "unsafe_path", "'../x.wav'"),
        ({"metadata.csv": metadata([]), "/etc/x.wav": b"x"}, "unsafe_path", "'/etc/x.wav'"),
        ({"metadata.csv": metadata([]), "a\\..\\..\\x.wav": b"x"}, "unsafe_path", "x.wav"),
        ({"a/metadata.csv": metadata([]), "b/metadata.csv": metadata([])}, "ambiguous_metadata", "a/metadata.csv"),
        ({"metadata.csv": metadata([(f"{i}.wav", "t") for i in range(9)])}, "too_many_clips", "more than 8 rows"),
        ({"metadata.csv": metadata([]), **{f"{i}.wav": b"" for i in range(9)}}, "too_many_clips", "9 audio files"),
        ({"metadata.csv": metadata([]), **{f"n{i}.txt": b"" for i in range(265)}}, "too_many_files", "264"),
    ],
)
def test_bad_archives_are_refused_naming_the_problem(files: dict[str, bytes], code: str, says: str) -> None:
    for pack in (zipped, tarred):
        got_code, status, message = refusal(pack(files))
        assert (got_code, status) == (code, 400), message
        assert says in message


def test_links_devices_and_duplicate_entries_are_refused() -> None:
    base = {"metadata.csv": metadata([("a.wav", "Hi.")])}
    assert refusal(zipped(base, links={"a.wav": "/etc/passwd"}))[0] == "unsafe_member"
    odd = [
        member("a.wav", tarfile.SYMTYPE, "/etc/passwd"),
        member("a.wav", tarfile.LNKTYPE, "metadata.csv"),
        member("dev", tarfile.CHRTYPE),
        member("fifo", tarfile.FIFOTYPE),
    ]
    for info in odd:
        code, status, message = refusal(tarred(base, extra=[info]))
        assert (code, status) == ("unsafe_member", 400) and repr(info.name) in message
    # A tar may hold one name twice (appended updates): which one is meant is anyone's guess.
    twice = tarred(base, extra=[member("a.wav", tarfile.REGTYPE), member("a.wav", tarfile.REGTYPE)])
    assert refusal(twice)[0] == "duplicate_member"


def test_archives_over_the_limit_uncompressed_are_refused_before_they_are_inflated() -> None:
    """Zip and tar bombs: a megabyte of zeros compresses to a kilobyte; the limit is on what they expand to."""
    bomb = {"metadata.csv": metadata([("a.wav", "Hi.")]), "a.wav": bytes(2 << 20)}
    for pack in (zipped, tarred):
        data = pack(bomb)
        assert len(data) < 20_000
        code, status, message = refusal(data)
        assert (code, status) == ("too_large", 413) and "MiB" in message


def test_a_tar_whose_headers_expand_past_the_limit_is_refused() -> None:
    """Member sizes are not all a tar holds: a 3 MiB extended (pax) header counts against the limit too."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("metadata.csv")
        info.pax_headers = {"comment": "x" * (3 << 20)}
        archive.addfile(info, io.BytesIO(b""))
    assert refusal(out.getvalue())[:2] == ("too_large", 413)


def test_damaged_and_foreign_files_are_not_archives() -> None:
    assert refusal(b"RIFF....WAVEfmt " + bytes(100))[0] == "not_an_archive"
    good = zipped(GOOD)
    assert refusal(good[: len(good) // 2])[0] == "corrupt_archive"
    assert refusal(b"\x1f\x8b" + bytes(100))[0] == "corrupt_archive"
    flipped = bytearray(zipped({"metadata.csv": metadata([("a.wav", "Hi.")]) * 50}))
    flipped[60] ^= 0xFF  # inside the deflated metadata: a CRC or inflate error
    assert refusal(bytes(flipped))[0] == "corrupt_archive"
