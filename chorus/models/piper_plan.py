"""A Piper request's decoder windows, planned: the one schedule the step follows and admission control prices.

A segment's latent is decoded in windows: ``first`` frames for a request's first window, then ``every``, doubling
up to ``largest`` (a window pays 2 x context frames, so longer ones waste less once a stream is ahead). The
context is the decoder's receptive field (``PiperGraph.context_frames``), so windows join sample-exactly. A crumb
shorter than half a window is never left at a segment's end. A segment not encoded yet has an estimated length
(phoneme ids x learned frames per id x length scale); its first window also pays the encoder.

The flow turns the encoder's prior frames into the decoder's latent (``PiperGraph.run_flow``). A request's first
window runs it only as far as that window needs (plus the flow's context), the next window runs the rest of the
segment: ~20 ms less first audio for ~10 ms more CPU per request (2 x 32 frames of context). Every other segment
runs it whole with its first window (``flow_span``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from chorus.models.base import Window


@dataclass(frozen=True, slots=True)
class WindowSchedule:
    first: int
    every: int
    largest: int

    def size(self, num_windows: int) -> int:
        """Frames of a request's window number ``num_windows`` (0-based); depends on nothing else."""
        if num_windows == 0:
            return self.first
        return min(self.every << min(num_windows - 1, 30), self.largest)


def window_end(total: int, start: int, size: int) -> int:
    """Where a window of ``size`` frames starting at ``start`` ends in a segment of ``total`` frames."""
    end = min(total, start + size)
    return total if total - end < size // 2 else end


def flow_span(total: int, flowed: int, need: int, context: int, *, first: bool) -> tuple[int, int]:
    """The prior frames [start, end) the flow runs on before a window that needs the latent up to frame ``need``
    of a segment of ``total`` frames whose latent is ready up to ``flowed``; (0, 0) when it is ready already.

    ``first``: the request's first window. It runs only up to ``need`` (plus ``context``, the flow's reach), unless
    that leaves less than one context of the segment; the frames it leaves are then ready up to ``need``. Any
    other window runs the rest of the segment (from ``context`` frames before ``flowed``). ``context`` 0: the flow
    has no exact windows and runs whole.
    """
    if flowed >= need:
        return 0, 0
    start = max(0, flowed - context)
    end = need + context if first and context and need + 2 * context < total else total
    return start, end


def flowed_after(total: int, end: int, context: int) -> int:
    """How far a segment's latent is ready after the flow ran up to prior frame ``end`` (see ``flow_span``)."""
    return total if end >= total else end - context


class CostModel:
    """Running estimates (exponential averages of measured CPU times of one thread): seconds per encoder phoneme
    id, per flow frame (context included), per decoded frame (context included) and per converted frame; and
    latent frames per phoneme id at speed 1."""

    def __init__(self) -> None:
        self.per_id = 1e-3
        self.per_flow_frame = 2e-4
        self.per_frame = 1e-3
        self.per_converted_frame = 1e-4
        self.frames_per_id = 3.0
        self._lock = threading.Lock()

    def observe(
        self, *, ids: int, enc_s: float, flow_frames: int = 0, flow_s: float = 0.0, frames: int, dec_s: float
    ) -> None:
        with self._lock:
            if ids:
                self.per_id = 0.8 * self.per_id + 0.2 * enc_s / ids
            if flow_frames:
                self.per_flow_frame = 0.8 * self.per_flow_frame + 0.2 * flow_s / flow_frames
            if frames:
                self.per_frame = 0.8 * self.per_frame + 0.2 * dec_s / frames

    def observe_conversion(self, frames: int, seconds: float) -> None:
        if frames:
            with self._lock:
                self.per_converted_frame = 0.8 * self.per_converted_frame + 0.2 * seconds / frames

    def observe_durations(self, ids: int, frames: int, length_scale: float) -> None:
        if ids and length_scale > 0:
            with self._lock:
                self.frames_per_id = 0.9 * self.frames_per_id + 0.1 * frames / (ids * length_scale)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a request stands: segments still to speak (phoneme ids each, the current one first), the current
    segment's frames if it is encoded (else None), how far its latent is ready (the flow), the next frame to
    decode, and windows decoded so far."""

    segment_ids: Sequence[int]
    encoded_frames: int | None
    flowed: int
    cursor: int
    num_windows: int
    length_scale: float
    is_converted: bool


def plan_windows(
    pos: Position,
    schedule: WindowSchedule,
    costs: CostModel,
    frame_seconds: float,
    context: int,
    limit: int | None = None,
    flow_context: int | None = None,
) -> tuple[Window, ...]:
    """The remaining windows of the request at ``pos``, in order (at most ``limit`` of them), each decoded with
    ``context`` frames on either side; ``flow_context``: the flow's (None: the encoder gives the latent)."""
    windows: list[Window] = []
    num_windows = pos.num_windows
    cursor = pos.cursor
    for index, ids in enumerate(pos.segment_ids):
        encoded = index == 0 and pos.encoded_frames is not None
        if index == 0 and pos.encoded_frames is not None:
            total = pos.encoded_frames
            flowed = pos.flowed
        else:
            total = max(1, round(ids * costs.frames_per_id * pos.length_scale))
            cursor = flowed = 0
        while cursor < total:
            if limit is not None and len(windows) >= limit:
                return tuple(windows)
            end = window_end(total, cursor, schedule.size(num_windows))
            lo, hi = max(0, cursor - context), min(total, end + context)
            cost = (hi - lo) * costs.per_frame
            if not encoded:
                cost += ids * costs.per_id
                encoded = True
            if flow_context is not None:
                start, stop = flow_span(total, flowed, hi, flow_context, first=num_windows == 0)
                if stop:
                    cost += (stop - start) * costs.per_flow_frame
                    flowed = flowed_after(total, stop, flow_context)
            if pos.is_converted:
                cost += (end - cursor) * costs.per_converted_frame
            windows.append(Window((end - cursor) * frame_seconds, cost))
            cursor = end
            num_windows += 1
    return tuple(windows)
