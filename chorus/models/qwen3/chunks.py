"""Streaming each slot's frames as audio chunks: when a chunk is due, and one codec call for all that are.

A stream's first chunk is short (fast first audio); later ones start at ``emit_every_frames`` and double up to
``max_emit_frames`` once the listener has a buffer (each chunk re-decodes ``DECODE_CONTEXT_FRAMES`` frames of
left context, so longer chunks waste less of the codec's work).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

SAMPLES_PER_FRAME = 1920  # 24 kHz, 12.5 frames per second
DEFAULT_FIRST_EMIT_FRAMES = 3
DEFAULT_EMIT_EVERY_FRAMES = 6
MAX_CHUNK_FACTOR = 4  # default cap: 4 x emit_every_frames
DECODE_CONTEXT_FRAMES = 25  # the library's own left context (chunked_decode)


class ChunkedSlot(Protocol):
    pending: list[torch.Tensor]  # frames [16] not decoded yet
    context: list[torch.Tensor]  # the last decoded frames: the decoder's left context
    num_emits: int
    is_finished: bool


@dataclass(frozen=True, slots=True)
class ChunkSchedule:
    first_emit_frames: int
    emit_every_frames: int
    max_emit_frames: int

    @classmethod
    def of(cls, first: int | None, every: int | None, largest: int | None) -> ChunkSchedule:
        """The settings, None for the defaults; the cap is never below emit_every_frames."""
        every = every or DEFAULT_EMIT_EVERY_FRAMES
        return cls(first or DEFAULT_FIRST_EMIT_FRAMES, every, max(largest or MAX_CHUNK_FACTOR * every, every))

    def frames(self, num_emits: int) -> int:
        """Frames in a stream's next chunk after ``num_emits`` chunks."""
        if num_emits == 0:
            return self.first_emit_frames
        return min(self.emit_every_frames << (num_emits - 1), self.max_emit_frames)


class ChunkDecoder:
    def __init__(self, decoder: Any, schedule: ChunkSchedule, *, num_groups: int, device: torch.device) -> None:
        self.decoder = decoder
        self.schedule = schedule
        self.num_groups = num_groups
        self.device = device

    def emit(
        self, batch: Sequence[ChunkedSlot], timed: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> list[np.ndarray]:
        """Decode the pending frames of every slot whose chunk is due (or that finished), in ONE codec call.

        Each slot's codes are its last decoded frames (left context) then its new ones; shorter rows are padded
        on the right, which a causal decoder never looks at, so a slot's audio does not depend on its batch.
        """
        audio = [np.zeros(0, dtype=np.float32) for _ in batch]
        due = [
            i
            for i, s in enumerate(batch)
            if s.pending and (s.is_finished or len(s.pending) >= self.schedule.frames(s.num_emits))
        ]
        if not due:
            return audio
        contexts = [batch[i].context[-DECODE_CONTEXT_FRAMES:] for i in due]
        rows = [torch.stack(ctx + batch[i].pending) for i, ctx in zip(due, contexts, strict=True)]  # [T_i, 16]
        longest = max(r.shape[0] for r in rows)
        codes = torch.zeros(len(rows), self.num_groups, longest, dtype=torch.long, device=self.device)
        for j, r in enumerate(rows):
            codes[j, :, : r.shape[0]] = r.T.long()
        with torch.inference_mode(), timed():
            wav = self.decoder(codes)  # [k, 1, longest * 1920]
        wav = wav.reshape(len(rows), -1).float().clamp(-1, 1).cpu().numpy()
        for j, i in enumerate(due):
            slot, ctx = batch[i], contexts[j]
            start, end = len(ctx) * SAMPLES_PER_FRAME, rows[j].shape[0] * SAMPLES_PER_FRAME
            audio[i] = np.asarray(wav[j, start:end], dtype=np.float32)
            slot.context = (ctx + slot.pending)[-DECODE_CONTEXT_FRAMES:]
            slot.pending = []
            slot.num_emits += 1
        return audio
