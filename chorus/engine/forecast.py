"""When waiting requests will start, and who is refused (429) because they would wait too long.

Under admission control the engine asks the :class:`Forecast` once per loop turn: each waiting request's first
audio is predicted by admission's simulation (refreshed at most every ``PREDICT_EVERY_S``, at once for a
newcomer), and a newcomer predicted past its wait limit is refused with the wait a newcomer would really face
as its ``Retry-After``. The latest refusals are remembered, so a later newcomer of no higher priority, who would
queue behind them, is refused before any work is done for it (``early_refusal``, called from other threads).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence

from chorus.engine.admission import PlannedAdmission
from chorus.engine.request import Request
from chorus.errors import QueueFullError

# Waiting requests' predicted first audio is refreshed at most this often (and at once for a newcomer).
PREDICT_EVERY_S = 0.2
# Predictions look no further ahead than this (a wait past it is refused, with this as its Retry-After).
MAX_PREDICTION_S = 120.0


def wait_limit(
    max_queue_wait_s: float | None,
    timeout_s: float | None,
    now: float,
    arrival: float,
    plays_at: float | None = None,
) -> float:
    """How much longer a request may wait for first audio. Both limits count from arrival (preparation
    included); the queue-wait limit from when its audio is needed, for a segment that plays later."""
    needed = arrival if plays_at is None else max(arrival, plays_at)
    limits = [(max_queue_wait_s or math.inf) - (now - needed)]
    if timeout_s is not None:
        limits.append(timeout_s - (now - arrival))
    return min(limits)


def capacity_error(wait_s: float, limit_s: float, wait_text: str) -> QueueFullError:
    return QueueFullError(
        f"the server is at capacity: the wait for first audio would be {wait_text} {wait_s:.1f} s, over this "
        f"request's limit of {limit_s:.1f} s",
        retry_after_s=wait_s,
    )


class Forecast:
    def __init__(self, admission: PlannedAdmission, max_slots: int, max_queue_wait_s: float | None) -> None:
        self.admission = admission
        self.max_slots = max_slots
        self.max_queue_wait_s = max_queue_wait_s
        self._predicted_at = -math.inf
        self._lock = threading.Lock()
        # The latest prediction pass's refusals: (lowest priority refused, when a newcomer behind them would start).
        self._refused: tuple[int, float] | None = None

    def early_refusal(
        self, priority: int, timeout_s: float | None, plays_at: float | None = None
    ) -> QueueFullError | None:
        """A 429 for a newcomer that cannot start in time, decided before it is prepared (a flood's callers get
        their answer at once instead of after phonemization): the latest refusals' predicted start is past
        this newcomer's wait limit, and it would queue behind them."""
        with self._lock:
            refused = self._refused
        if refused is None or priority > refused[0]:
            return None
        now = time.monotonic()
        limit = wait_limit(self.max_queue_wait_s, timeout_s, now, now, plays_at)
        wait = refused[1] - now
        return capacity_error(wait, limit, "over") if wait > limit else None

    def nobody_waits(self) -> None:
        """A newcomer gets a slot: forget the refusals."""
        with self._lock:
            self._refused = None

    def predict(
        self, running: Sequence[Request], waiting: Sequence[Request], now: float
    ) -> list[tuple[Request, QueueFullError]]:
        """Note each waiting request's predicted first audio; return the newcomers refused, with their error."""
        fresh = any(r.predicted_first_audio is None for r in waiting)
        if not fresh and now - self._predicted_at < PREDICT_EVERY_S:
            return []
        self._predicted_at = now
        horizon = MAX_PREDICTION_S  # beyond any wait limit: a refused caller still learns when to come back
        # New requests carry their limit: the simulation leaves out each one it would keep past it (refused
        # below), so one pass predicts everyone, however many a flood brings.
        limits = [
            wait_limit(self.max_queue_wait_s, r.timeout_s, now, r.arrival_time, r.plays_at)
            if r.predicted_first_audio is None
            else None
            for r in waiting
        ]
        admission = self.admission
        firsts = admission.predict_first_audio(
            running, waiting, now, admission.budget(), horizon, self.max_slots, limits, probe=fresh
        )
        # The wait of a newcomer behind everyone kept: a refused caller's honest Retry-After (the simulation
        # stops following a refused request once it passes its limit).
        tail = firsts.pop() if fresh else None
        tail_wait = horizon if tail is None else tail
        refused: list[tuple[Request, QueueFullError]] = []
        for req, first, limit in zip(waiting, firsts, limits, strict=True):
            if limit is not None and (first is None or first > limit):
                refused.append((req, capacity_error(max(limit, tail_wait), limit, "about")))
                continue
            req.predicted_first_audio = math.inf if first is None else now + first
            if limit is not None and first is not None:
                req.first_prediction_s = now + first - req.arrival_time
        if refused:
            with self._lock:
                self._refused = (min(req.priority for req, _ in refused), now + tail_wait)
        elif fresh:
            self.nobody_waits()  # newcomers fitted: capacity is back
        return refused
