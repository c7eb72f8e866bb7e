"""Joining separately decoded audio segments without clicks."""

from __future__ import annotations

import numpy as np


def equal_power_ramps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) of length n whose squares sum to 1 (uncorrelated signals keep their power)."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    return np.cos(0.5 * np.pi * t).astype(np.float32), np.sin(0.5 * np.pi * t).astype(np.float32)


class Crossfader:
    """Streams chunks through, overlap-adding across segment seams.

    A chunk marked as a segment end keeps its last ``overlap`` samples back; they are crossfaded with
    the head of the next chunk. Chunks inside a segment pass through untouched (they are already
    continuous). Each seam shortens the stream by the overlap length.
    """

    def __init__(self, overlap: int) -> None:
        if overlap < 0:
            raise ValueError("overlap must be >= 0")
        self.overlap = overlap
        self._tail = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> int:
        """Samples held back, waiting for the next chunk."""
        return int(self._tail.size)

    def push(self, audio: np.ndarray, *, is_segment_end: bool) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if self._tail.size:
            n = min(self._tail.size, audio.size)
            fade_out, fade_in = equal_power_ramps(n)
            head = self._tail[: self._tail.size - n]
            mixed = self._tail[self._tail.size - n :] * fade_out + audio[:n] * fade_in
            audio = np.concatenate([head, mixed, audio[n:]])
            self._tail = np.zeros(0, dtype=np.float32)
        if is_segment_end and self.overlap:
            keep = min(self.overlap, audio.size)
            self._tail = audio[audio.size - keep :].copy()
            audio = audio[: audio.size - keep]
        return audio

    def flush(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail
