"""Processes killed with SIGKILL in the middle of a write leave nothing half-done visible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chorus.store import VoiceStore
from chorus.store.voices import voice_prefix
from tests.store.fixtures import Backend

CHILD = Path(__file__).with_name("crash_child.py")
REPO = Path(__file__).resolve().parents[2]


def _spawn(mode: str, args: dict[str, object]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(CHILD), mode, json.dumps(args)], env=env, stderr=subprocess.PIPE)


def _wait_for(marker: Path, child: subprocess.Popen[bytes], timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"child exited with {child.returncode}: {child.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.01)
    return marker.read_text()


def _kill(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    if child.stderr is not None:
        child.stderr.close()


def test_killed_mid_create_leaves_no_visible_voice(backend: Backend, tmp_path: Path) -> None:
    sql, blobs = backend.open()
    store = VoiceStore(sql, blobs)
    marker = tmp_path / "marker"
    args = {"config": backend.config_args, "data_dir": str(backend.data_dir), "marker": str(marker)}
    # Killed after the row insert and the first blob write, before the other blobs and the switch to "ready".
    child = _spawn("voice", {**args, "tenant": "default", "name": "victim", "stage": "blob_written:original"})
    voice_id = _wait_for(marker, child)
    _kill(child)

    leftover = f"{voice_prefix('default', voice_id)}/original"
    assert blobs.exists(leftover)  # the crash really left a partial voice behind
    assert store.list("default") == []
    assert store.sweep_pending(3600) == []  # too young for a start-up sweep with a long cut-off
    assert store.sweep_pending(0) == [voice_id]
    assert not blobs.exists(leftover)
    assert store.sweep_pending(0) == []

    retry = store.create("default", "victim", "en", None, b"o", b"p", b"e", duration_s=1.0, sample_rate=24_000)
    assert [v.id for v in store.list("default")] == [retry.id]
    sql.close()


def test_killed_local_write_leaves_old_blob_or_none(tmp_path: Path) -> None:
    """The writer dies mid-way through a 256 MiB put: the key shows the old bytes (or nothing), never a prefix."""
    from chorus.store import LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs")
    size = 256 * 1024 * 1024
    for key, old in (("voices/t/v/processed", b"old contents"), ("voices/t/v/fresh", None)):
        if old is not None:
            store.put(key, old)
        folder = store.root / Path(key).parent
        marker = tmp_path / f"marker-{Path(key).name}"
        child = _spawn("blob", {"root": str(store.root), "key": key, "size": size, "marker": str(marker)})
        _wait_for(marker, child)
        deadline = time.monotonic() + 30
        temp: list[Path] = []
        while not any(0 < p.stat().st_size < size for p in temp if p.exists()):  # caught mid-write
            assert time.monotonic() < deadline and child.poll() is None, "could not catch the write in progress"
            temp = list(folder.glob(f".{Path(key).name}.*.tmp")) if folder.exists() else []
        _kill(child)
        seen = store.get(key) if store.exists(key) else None
        if seen is not None and len(seen) == size:
            assert seen == b"N" * size  # the kill came just after the rename: the whole new blob, also fine
        else:
            assert seen == old
            assert [p for p in folder.iterdir() if p.name.startswith(".")]  # the torn write stayed in its temp file
        store.delete_prefix("voices/t/v")  # takes stray temp files with it
        assert not folder.exists()
