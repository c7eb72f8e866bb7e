"""Streaming resampling (soxr), so chunk seams stay seamless after a rate change."""

from __future__ import annotations

import functools

import numpy as np
import soxr


class StreamResampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")

    def process(self, audio: np.ndarray, *, last: bool = False) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if self._stream is None:
            return audio
        return np.asarray(self._stream.resample_chunk(audio, last=last), dtype=np.float32)


# Chunk lengths (seconds) fed to a resampler to find the most it keeps back: from a few ms to over a second.
_PROBE_CHUNKS_S = (0.013, 0.05, 0.11, 0.27, 0.5, 0.77, 1.3) * 3


@functools.cache
def hold_back_s(in_rate: int, out_rate: int) -> float:
    """The most audio (seconds) a :class:`StreamResampler` keeps back until more input (or the end) comes, measured
    on this soxr build over a range of chunk lengths: its filter's delay plus part of an internal block, ~40 ms
    for 22050 -> 24000 Hz. A stream's client has that much less to play than the engine has made, so the engine
    delivers that much earlier."""
    if in_rate == out_rate:
        return 0.0
    resampler = StreamResampler(in_rate, out_rate)
    fed = made = 0
    most = 0.0
    for seconds in _PROBE_CHUNKS_S:
        size = max(1, round(seconds * in_rate))
        made += resampler.process(np.zeros(size, dtype=np.float32)).size
        fed += size
        most = max(most, fed / in_rate - made / out_rate)
    return most


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-signal resampling."""
    return StreamResampler(in_rate, out_rate).process(audio, last=True)
