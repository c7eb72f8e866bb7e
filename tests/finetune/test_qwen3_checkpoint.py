"""Checkpoints in the blob store: newest two kept, pointer written last, states round-trip without pickle."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from chorus.finetune.checkpoint import (
    BlobCheckpoints,
    CheckpointError,
    pack_state,
    restore_rng,
    rng_state,
    unpack_state,
)
from chorus.store.blobs import LocalBlobStore


class CrashingStore(LocalBlobStore):
    """Dies (raises) when writing the ``latest`` pointer for the ``crash_at``-th time: a process killed between
    writing a checkpoint and moving the pointer to it."""

    def __init__(self, root: Path, crash_at: int) -> None:
        super().__init__(root)
        self.pointer_writes = 0
        self.crash_at = crash_at

    def _put(self, key: str, data: bytes) -> None:
        if key.endswith("/latest"):
            self.pointer_writes += 1
            if self.pointer_writes == self.crash_at:
                raise KeyboardInterrupt("killed between the checkpoint and its pointer")
        super()._put(key, data)


def test_save_load_keeps_the_newest_two(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ckpt = BlobCheckpoints(store, "fine_tunes/t1/ft1/checkpoints")
    assert ckpt.load() is None
    for step in (3, 6, 9, 12):
        ckpt.save(f"state {step}".encode(), step=step)
        assert ckpt.load() == f"state {step}".encode()
    names = sorted(p.name for p in (tmp_path / "fine_tunes/t1/ft1/checkpoints").iterdir())
    assert names == ["ckpt-00000009.pt", "ckpt-00000012.pt", "latest"]
    pointer = json.loads(store.get("fine_tunes/t1/ft1/checkpoints/latest"))
    assert pointer == {"latest": "ckpt-00000012.pt", "previous": "ckpt-00000009.pt"}
    ckpt.save(b"again", step=12)  # the same step twice (preempted right after a periodic save) keeps 9
    assert ckpt.load() == b"again" and store.exists("fine_tunes/t1/ft1/checkpoints/ckpt-00000009.pt")
    ckpt.clear()
    assert ckpt.load() is None


def test_a_crash_between_checkpoint_and_pointer_leaves_the_previous_one(tmp_path: Path) -> None:
    store = CrashingStore(tmp_path, crash_at=3)
    ckpt = BlobCheckpoints(store, "run")
    ckpt.save(b"step 2", step=2)
    ckpt.save(b"step 4", step=4)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(b"step 6", step=6)
    assert store.exists("run/ckpt-00000006.pt")  # written, but never pointed at
    assert BlobCheckpoints(LocalBlobStore(tmp_path), "run").load() == b"step 4"
    assert store.exists("run/ckpt-00000002.pt")  # nothing was deleted before the pointer moved


def test_a_missing_newest_falls_back_to_the_previous(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ckpt = BlobCheckpoints(store, "run")
    ckpt.save(b"one", step=1)
    ckpt.save(b"two", step=2)
    store.delete("run/ckpt-00000002.pt")
    assert ckpt.load() == b"one"


def test_state_and_rng_round_trip() -> None:
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    state = {"step": 7, "losses": [1.5, 1.25], "lora": {"a": torch.arange(4.0)}, "rng": rng_state()}
    expected = (torch.rand(3), random.random(), np.random.rand(2))
    restored = unpack_state(pack_state(state))
    assert restored["step"] == 7 and restored["losses"] == [1.5, 1.25]
    assert torch.equal(restored["lora"]["a"], torch.arange(4.0))
    restore_rng(restored["rng"])
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(again[0], expected[0]) and again[1] == expected[1] and np.array_equal(again[2], expected[2])


def test_foreign_bytes_are_refused() -> None:
    with pytest.raises(CheckpointError):
        unpack_state(b"garbage")
    with pytest.raises(CheckpointError, match="not a chorus"):
        buffer = io.BytesIO()
        torch.save({"format": "other"}, buffer)
        unpack_state(buffer.getvalue())
