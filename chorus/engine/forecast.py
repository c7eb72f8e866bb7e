"""When waiting requests will start, and who is refused (429) because they would wait too long.

Under admission control the engine asks the :class:`Forecast` once per loop turn: each waiting request's first
audio is predicted by admission's simulation (refreshed at most every ``PREDICT_EVERY_S``, at once for a
newcomer), and a newcomer predicted past its wait limit is refused with the wait a newcomer would really face
as its ``Retry-After``. The latest refusals are remembered, so a later newcomer of no higher priority, who would
queue behind them, is refused before any work is done for it (``early_refusal``, called from other threads).

So is a newcomer behind a crowd still being prepared (a flood: hundreds arrive at once, and only a few are
phonemized at a time). While requests wait for a slot, each character of text ahead of a newcomer adds a learned
number of seconds to its wait (its plan's CPU over the capacity: the fluid rate at which a saturated engine starts
requests); so the crowd's late callers get their 429 in milliseconds instead of after everyone ahead of them was
phonemized, each with the wait it would face as its ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chorus.engine.admission import Budget, PlannedAdmission, StreamPlan
from chorus.engine.request import Request
from chorus.errors import QueueFullError

# Waiting requests' predicted first audio is refreshed at most this often (and at once for a newcomer).
PREDICT_EVERY_S = 0.2
# Predictions look no further ahead than this (a wait past it is refused, with this as its Retry-After).
MAX_PREDICTION_S = 120.0
# Weight of the newest request in the learned seconds of wait per character ahead (an exponential average).
PER_CHAR_SMOOTHING = 0.2


@dataclass(frozen=True, slots=True)
class QueueView:
    """The latest prediction pass, as newcomers not yet queued see it."""

    tail_at: float  # when a newcomer of no higher priority than ``priority``, behind everyone waiting, would start
    priority: int  # the lowest priority waiting (a newcomer of at most this queues behind all of them)
    s_per_char: float  # seconds each character of text queued ahead adds to a newcomer's wait (while saturated)


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
        self._view: QueueView | None = None  # None: nobody waits for a slot
        self._s_per_char: float | None = None

    def early_refusal(
        self,
        priority: int,
        timeout_s: float | None,
        plays_at: float | None = None,
        *,
        arrival: float | None = None,
        chars_ahead: int = 0,
    ) -> QueueFullError | None:
        """A 429 for a newcomer that cannot start in time, decided before it is prepared (a flood's callers get
        their answer at once instead of after phonemization): the latest refusals' predicted start, or (while
        requests wait for a slot) the queue's tail plus ``chars_ahead`` characters of requests being prepared
        ahead of it, is past this newcomer's wait limit (counted from its ``arrival``, default now), and it
        would queue behind them."""
        with self._lock:
            refused, view = self._refused, self._view
        now = time.monotonic()
        waits = [] if refused is None or priority > refused[0] else [refused[1] - now]
        if view is not None:
            tail = view.tail_at - now if priority <= view.priority else 0.0
            waits.append(max(0.0, tail) + chars_ahead * view.s_per_char)
        if not waits:
            return None
        wait = max(waits)
        limit = wait_limit(self.max_queue_wait_s, timeout_s, now, now if arrival is None else arrival, plays_at)
        return capacity_error(wait, limit, "over") if wait > limit else None

    def nobody_waits(self) -> None:
        """A newcomer gets a slot: forget the refusals and the queue."""
        with self._lock:
            self._refused = None
            self._view = None

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
        budget = admission.budget()
        plans = [admission.waiting_plan(r, now) for r in waiting]  # once: the prediction and the learning share them
        if fresh:
            self._learn_per_char(
                [(r, plan) for r, plan in zip(waiting, plans, strict=True) if r.predicted_first_audio is None], budget
            )
        firsts = admission.predict_first_audio(
            running, plans, now, budget, horizon, self.max_slots, limits, probe=fresh
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
            with self._lock:
                self._refused = None  # newcomers fitted: capacity is back
        if fresh and self._s_per_char is not None:
            gone = {id(req) for req, _ in refused}
            kept = [r for r in waiting if id(r) not in gone]
            view = QueueView(now + tail_wait, min((r.priority for r in kept), default=0), self._s_per_char)
            with self._lock:
                self._view = view if kept else None
        return refused

    def _learn_per_char(self, fresh: Sequence[tuple[Request, StreamPlan]], budget: Budget) -> None:
        """Seconds of a saturated engine's time each character of these requests' text takes: their plans'
        CPU (with the learned margin and overhead) over the workers' capacity."""
        if budget.capacity <= 0:
            return
        for req, plan in fresh:
            chars = len(req.input.text)
            if chars == 0:
                continue
            demand = sum(budget.demand(w) for w in plan.windows)
            rate = demand / budget.capacity / chars
            old = self._s_per_char
            self._s_per_char = rate if old is None else old + PER_CHAR_SMOOTHING * (rate - old)
