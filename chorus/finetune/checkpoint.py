"""Training checkpoints in the blob store, written so that a crash at any moment leaves one that resumes.

Layout under ``prefix``: ``ckpt-{step:08d}.pt`` files and a small ``latest`` pointer (JSON) naming the newest and the
one before it. A save writes the checkpoint first and the pointer second (each blob write is atomic), so a process
killed between the two leaves the pointer on the previous checkpoint, which is still there: only checkpoints older
than the two the pointer names are deleted, and only after the pointer has moved. Orphans of such a crash (a
checkpoint the pointer never named) go with :meth:`BlobCheckpoints.clear` when the job is over.

The bytes themselves are opaque here; :func:`pack_state` / :func:`unpack_state` turn a training state (tensors,
numbers, strings, lists, dicts) into bytes and back without pickle's code execution (``weights_only``), and
:func:`rng_state` / :func:`restore_rng` carry the torch, Python and NumPy random streams across a restart.
"""

from __future__ import annotations

import io
import json
import logging
import random
from typing import Any

import numpy as np
import torch

from chorus.store.blobs import BlobStore

POINTER = "latest"
STATE_FORMAT = "chorus-train-state-1"

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """Bytes that are not a training state, or a state that does not belong to this run."""


class BlobCheckpoints:
    """The newest two checkpoints of one training run, under ``prefix`` in ``blobs``."""

    def __init__(self, blobs: BlobStore, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix.strip("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def save(self, state: bytes, *, step: int) -> str:
        """Store ``state`` as the checkpoint of ``step``, then point ``latest`` at it; returns its key."""
        if step < 0:
            raise ValueError("step must be >= 0")
        name = f"ckpt-{step:08d}.pt"
        latest, previous = self._pointer()
        self.blobs.put(self.key(name), state)
        keep = latest if latest != name else previous
        self.blobs.put(self.key(POINTER), json.dumps({"latest": name, "previous": keep}).encode())
        for old in (previous, latest):
            if old is not None and old not in (name, keep):
                self.blobs.delete(self.key(old))
        return self.key(name)

    def load(self) -> bytes | None:
        """The newest checkpoint's bytes, or None before the first save."""
        latest, previous = self._pointer()
        for name in (latest, previous):
            if name is None:
                continue
            try:
                return self.blobs.get(self.key(name))
            except FileNotFoundError:
                logger.warning("checkpoint %s named by %s is missing", name, self.key(POINTER))
        return None

    def clear(self) -> None:
        """Remove every checkpoint of this run (when its adapter is stored, or the job is cancelled)."""
        self.blobs.delete_prefix(self.prefix)

    def _pointer(self) -> tuple[str | None, str | None]:
        try:
            data = json.loads(self.blobs.get(self.key(POINTER)))
        except FileNotFoundError:
            return None, None
        return data.get("latest"), data.get("previous")


def pack_state(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, **state}, buffer)
    return buffer.getvalue()


def unpack_state(data: bytes) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors for foreign bytes
        raise CheckpointError(f"unreadable training checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError("not a chorus training checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """The torch (CPU), Python and NumPy global random states, as weights_only-loadable values."""
    legacy: tuple[str, np.ndarray, int, int, float] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    name, keys, pos, has_gauss, cached = legacy
    return {
        "torch": torch.random.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
