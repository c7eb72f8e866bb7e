"""Engine counters: written by the engine thread, read by anyone (under a lock)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

WINDOW_S = 10.0  # rates are over the last WINDOW_S seconds


@dataclass(frozen=True, slots=True)
class StepRecord:
    end_time: float
    duration_s: float
    num_slots: int
    audio_seconds: float


class EngineEvents(Protocol):
    """Where the engine's events go besides its own counters (the server's Prometheus metrics). Called on the
    engine thread: each must be quick and must not raise."""

    def step(self, duration_s: float, num_slots: int, audio_s: float) -> None: ...

    def first_audio(self, seconds: float) -> None: ...

    def chunk(self, gap_s: float, late_s: float) -> None: ...

    def finished(self, status: str, service_s: float | None, audio_s: float) -> None: ...


class EngineMetrics:
    def __init__(self) -> None:
        self.events: EngineEvents | None = None
        self._lock = threading.Lock()
        self._steps: deque[StepRecord] = deque()
        self._ttfa: deque[float] = deque(maxlen=4096)
        self._service: deque[float] = deque(maxlen=256)
        self.finished: Counter[str] = Counter()
        self.total_steps = 0
        self.total_audio_seconds = 0.0

    def observe_step(self, duration_s: float, num_slots: int, audio_seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._steps.append(StepRecord(now, duration_s, num_slots, audio_seconds))
            while self._steps and self._steps[0].end_time < now - WINDOW_S:
                self._steps.popleft()
            self.total_steps += 1
            self.total_audio_seconds += audio_seconds
        if self.events is not None:
            self.events.step(duration_s, num_slots, audio_seconds)

    def observe_first_audio(self, seconds: float) -> None:
        with self._lock:
            self._ttfa.append(seconds)
        if self.events is not None:
            self.events.first_audio(seconds)

    def observe_chunk(self, gap_s: float, late_s: float) -> None:
        """A playing stream's next audio left the engine ``gap_s`` after its previous one; ``late_s`` > 0: after
        its client (playing from its first audio, in real time) would have run dry, by that much."""
        if self.events is not None:
            self.events.chunk(gap_s, late_s)

    def observe_finish(self, status: str, service_s: float | None, audio_s: float = 0.0) -> None:
        with self._lock:
            self.finished[status] += 1
            if service_s is not None:
                self._service.append(service_s)
        if self.events is not None:
            self.events.finished(status, service_s, audio_s)

    def mean_service_s(self, default: float = 10.0) -> float:
        with self._lock:
            return float(np.mean(self._service)) if self._service else default

    def mean_step_s(self, default: float = 0.05) -> float:
        with self._lock:
            if not self._steps:
                return default
            return float(np.mean([s.duration_s for s in self._steps]))

    def snapshot(self) -> dict[str, object]:
        now = time.monotonic()
        with self._lock:
            steps = [s for s in self._steps if s.end_time >= now - WINDOW_S]
            ttfa = np.asarray(self._ttfa, dtype=np.float64)
            finished = dict(self.finished)
            total_steps, total_audio = self.total_steps, self.total_audio_seconds
        span = WINDOW_S if steps else 1.0
        pct = {f"p{p}": round(float(np.percentile(ttfa, p)), 4) if ttfa.size else None for p in (50, 90, 95, 99)}
        return {
            "steps_per_s": round(len(steps) / span, 3),
            "audio_s_per_s": round(sum(s.audio_seconds for s in steps) / span, 3),
            "mean_step_ms": round(1000 * float(np.mean([s.duration_s for s in steps])), 3) if steps else None,
            "mean_batch_size": round(float(np.mean([s.num_slots for s in steps])), 3) if steps else None,
            "compute_s_per_audio_s": round(sum(s.duration_s for s in steps) / audio, 4)
            if (audio := sum(s.audio_seconds for s in steps))
            else None,
            "ttfa_s": {**pct, "count": int(ttfa.size)},
            "requests_finished": finished,
            "total_steps": total_steps,
            "total_audio_s": round(total_audio, 3),
        }
