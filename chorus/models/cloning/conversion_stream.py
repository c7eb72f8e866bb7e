"""Streaming conversion: one request's audio converted chunk by chunk as the engine produces it.

The input is converted in blocks on a fixed frame grid (every block boundary is a multiple of the hop from the
segment start, so a frame is analysed at the same instant whatever the chunking), each block with left context
and a little lookahead; consecutive re-syntheses are crossfaded over a short overlap.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyworld

from chorus.models.cloning import world
from chorus.models.cloning.world import HOP

CONTEXT = 4 * HOP  # samples of retained left context per block (dio's and cheaptrick's windows)
LOOKAHEAD = 2 * HOP  # samples analysed past a block's end
CROSSFADE = 2 * HOP  # overlap of consecutive re-syntheses


class FrameConverter(Protocol):
    """What a stream needs of a fitted model (chorus.models.cloning.conversion.ConversionModel)."""

    sample_rate: int

    def convert_features(self, feats: world.Features) -> tuple[np.ndarray, np.ndarray]: ...


class StreamConverter:
    """One request's conversion state: buffered input, the frame grid's origin, the tail awaiting crossfade.

    ``process`` returns audio up to ``latency_samples`` behind its input (the lookahead and the crossfade,
    plus less than a hop when a chunk is not a whole number of hops); ``flush`` returns the rest and resets.
    """

    latency_samples = LOOKAHEAD + CROSSFADE

    def __init__(self, model: FrameConverter) -> None:
        self.model = model
        self._reset()

    def _reset(self) -> None:
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0] (a multiple of HOP)
        self._received = 0  # absolute samples received in this segment
        self._emitted = 0  # absolute samples returned so far
        self._tail = np.zeros(0, np.float32)  # synthesis of [emitted, emitted + len(tail)), for the crossfade

    def process(self, audio: np.ndarray) -> np.ndarray:
        chunk = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(chunk)):
            raise ValueError("the audio contains NaN or infinite samples")
        self._buffer = np.concatenate([self._buffer, chunk])
        self._received += chunk.size
        end = (self._received - LOOKAHEAD - CROSSFADE) // HOP * HOP
        if end <= self._emitted:
            return np.zeros(0, np.float32)
        return self._emit(end, end + CROSSFADE)

    def flush(self) -> np.ndarray:
        out = self._emit(self._received, self._received) if self._received > self._emitted else self._tail[:0]
        self._reset()
        return out

    def _emit(self, end: int, synth_end: int) -> np.ndarray:
        """Convert [emitted, synth_end), crossfade its start with the held tail, return [emitted, end)."""
        start = self._emitted
        lo = max(0, (start - CONTEXT) // HOP * HOP)
        hi = min(self._received, synth_end + LOOKAHEAD)
        window = self._buffer[lo - self._buffer_start : hi - self._buffer_start]
        converted = _convert_block(self.model, window)[start - lo : synth_end - lo]
        n = min(self._tail.size, converted.size)
        if n:
            fade = _fade(n)
            converted[:n] = self._tail[:n] * (1.0 - fade) + converted[:n] * fade
        self._tail = converted[end - start :].copy()
        self._emitted = end
        keep_from = max(0, (end - CONTEXT) // HOP * HOP)
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return np.asarray(np.clip(converted[: end - start], -1.0, 1.0), dtype=np.float32)


def _convert_block(model: FrameConverter, audio: np.ndarray) -> np.ndarray:
    """Analyse, convert and re-synthesise ``audio`` (its start on the frame grid); same length out."""
    n = audio.size
    # WORLD needs a few frames; a block's end is padded with silence (the segment ends there anyway).
    padded = np.zeros(max(n, 4 * HOP) // HOP * HOP + HOP + 1, np.float64)
    padded[:n] = audio
    feats = world.analyse(padded, model.sample_rate)
    f0, sp = model.convert_features(feats)
    out = pyworld.synthesize(
        np.ascontiguousarray(f0),
        np.ascontiguousarray(sp),
        feats.ap,
        model.sample_rate,
        world.frame_period(model.sample_rate),
    )
    result = np.zeros(n, np.float32)
    m = min(n, out.size)
    result[:m] = out[:m]
    return result


def _fade(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
