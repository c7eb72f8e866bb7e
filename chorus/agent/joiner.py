"""One continuous stream out of a session's separately synthesised segments.

Each segment is its own engine request; where one segment follows another without a pause in the text
(the next one was ready when this one ended) the seam is crossfaded, as the engine crossfades the segments of
one request. The last ``overlap`` samples are always held back until the next chunk (or the flush), so a seam
can still be faded after the segment's last chunk has gone out: ~10 ms of delay, no clicks.
"""

from __future__ import annotations

import numpy as np

from chorus.audio.crossfade import equal_power_ramps


class SeamJoiner:
    def __init__(self, overlap: int) -> None:
        if overlap < 0:
            raise ValueError("overlap must be >= 0")
        self.overlap = overlap
        self._tail = np.zeros(0, dtype=np.float32)
        self._fade = False
        self.position = 0  # samples in the joined stream so far, the held tail included

    def seam(self) -> None:
        """The segment just ended and the next follows at once: its head is crossfaded with the tail."""
        self._fade = True

    def push(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """(audio to send now, where the pushed audio's first sample lands in the joined stream)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._fade and audio.size:
            n = min(self._tail.size, audio.size)
            fade_out, fade_in = equal_power_ramps(n)
            mixed = self._tail[self._tail.size - n :] * fade_out + audio[:n] * fade_in
            joined = np.concatenate([self._tail[: self._tail.size - n], mixed, audio[n:]])
            start = self.position - n
            self._fade = False
        else:
            joined = np.concatenate([self._tail, audio])
            start = self.position
        self.position = start + audio.size
        keep = min(self.overlap, joined.size)
        self._tail = joined[joined.size - keep :].copy()
        return joined[: joined.size - keep], start

    def flush(self) -> np.ndarray:
        """Everything held back (the utterance ended, or the text paused): no seam to fade."""
        self._fade = False
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail

    def drop(self) -> None:
        """Barge-in: what is held back is never sent; the stream position stays where the client's audio ends."""
        self.position -= self._tail.size
        self._tail = np.zeros(0, dtype=np.float32)
        self._fade = False
