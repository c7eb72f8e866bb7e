"""Which requests hold a slot, and which slots the next step advances.

Admission: highest priority first, then a playing session's next segment before newcomers, then arrival order,
up to ``max_slots`` (continuous mode), or a whole new batch only once the previous one has finished (static mode).

Picking: on a GPU a step costs about the same for 1 or 64 slots, so every running slot steps. On a
CPU the cost grows with the batch, so the step takes slots by latest start time (playback deadline
minus the slot's estimated compute) until the compute budget is spent. A running stream's deadline
is when its client runs out of audio (less the lead it is kept ahead by, see ``Lead``); a newcomer's is
``first_audio_target_s`` after it arrived. So newcomers start fast while there is slack, and a stream about to
run dry goes before a newcomer (an underrun is worse than a slightly later first byte): the role vLLM's token
budget plays for text.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chorus.engine.request import NO_LEAD, Lead, Request, RequestStatus
from chorus.models.base import SlotState


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_slots: int
    mode: Literal["continuous", "static"] = "continuous"
    # Compute seconds one step may plan per worker; None = step every running slot.
    step_budget_s: float | None = None
    num_workers: int = 1
    # How soon after arrival a newcomer's first audio is due, for the deadline order above.
    first_audio_target_s: float = 0.25
    # A running stream's audio is due this long before its client runs dry (the trip to the client).
    delivery_margin_s: float = 0.0
    # ... and a playing stream is kept this far ahead besides (see Lead); only the order of work counts it, not
    # the urgent lanes: a stream short of its lead is not about to run dry.
    lead: Lead = NO_LEAD


class Scheduler:
    def __init__(self, config: SchedulerConfig, cost: Callable[[SlotState], float], sample_rate: int) -> None:
        self.config = config
        self._cost = cost
        self._sample_rate = sample_rate
        # heap of (-priority, 0 for a playing session's next segment else 1, arrival sequence, tie-breaker, request)
        self._waiting: list[tuple[int, int, int, int, Request]] = []
        self._tie = itertools.count()
        self.running: list[Request] = []

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        # A session's next segment (plays_at: its client is playing the one before) goes before newcomers of the
        # same priority: a stream that has started must not run dry (an underrun is worse than a later first byte).
        following = 0 if req.plays_at is not None else 1
        heapq.heappush(self._waiting, (-req.priority, following, req.sequence, next(self._tie), req))

    def waiting(self) -> list[Request]:
        """Waiting requests in the order they will be admitted."""
        return [entry[-1] for entry in sorted(self._waiting)]

    def admit(self, max_running: int | None = None) -> list[Request]:
        """Move waiting requests into free slots; the caller prefills them.

        ``max_running`` (admission control) may hold the running count below max_slots: on a CPU, a stream
        admitted beyond what the cores sustain in real time would make every running stream stutter.
        """
        if self.config.mode == "static" and self.running:
            return []
        limit = self.config.max_slots if max_running is None else min(max_running, self.config.max_slots)
        admitted: list[Request] = []
        while self._waiting and len(self.running) < limit:
            *_, req = heapq.heappop(self._waiting)
            req.status = RequestStatus.RUNNING
            req.admitted_time = time.monotonic()
            self.running.append(req)
            admitted.append(req)
        return admitted

    def pick(
        self,
        budget_s: float | None = None,
        *,
        urgent_within_s: float | None = None,
        newcomers: bool | None = None,
        background: bool | None = None,
    ) -> list[Request]:
        """The running requests the next step advances (none already in flight on a worker).

        ``budget_s``: compute seconds this step may plan (None = every ready slot).
        ``urgent_within_s``: only newcomers and streams that must start within this many seconds to be in
        time (the urgent lanes); ``newcomers``: True for newcomers only, False for playing streams only.
        ``background``: True for background requests only (nobody listens: batch jobs), False for the others.
        """
        ready = self._ready(background)
        if budget_s is None or self.config.mode == "static":
            return ready
        costs = self._costs(ready)
        latest_start = self._latest_starts(ready, costs)
        now = time.monotonic()
        target = self.config.first_audio_target_s
        starting = {id(r): r.is_starting(now + target) for r in ready}
        if urgent_within_s is not None:
            horizon = now + urgent_within_s
            dry_start = self._latest_starts(ready, costs, lead=False)
            ready = [r for r in ready if starting[id(r)] or dry_start[id(r)] < horizon]
        if newcomers is not None:
            ready = [r for r in ready if starting[id(r)] == newcomers]
        # Background requests (nobody listens) only after every live one: in lockstep they get what budget is left.
        ready.sort(key=lambda r: (r.background, latest_start[id(r)], -r.priority, r.sequence))
        picked: list[Request] = []
        spent = 0.0
        for req in ready:
            if picked and spent >= budget_s:
                break
            spent += costs[id(req)]
            picked.append(req)
        return picked

    def next_urgent_at(self, urgent_within_s: float) -> float | None:
        """When the first ready playing stream comes within ``urgent_within_s`` of its latest start (monotonic
        seconds; None: none is ready): the moment ``pick(urgent_within_s=...)`` would take it. Nothing else wakes
        the engine thread then (no request arrives, no worker finishes), so it waits until then at most."""
        if self.config.step_budget_s is None or self.config.mode == "static":
            return None
        due_by = time.monotonic() + self.config.first_audio_target_s
        playing = [r for r in self._ready(background=False) if not r.is_starting(due_by)]
        starts = self._latest_starts(playing, self._costs(playing), lead=False)
        return min(starts.values()) - urgent_within_s if starts else None

    def slack_s(self, batch: list[Request]) -> float:
        """Seconds the most pressed request of ``batch`` has to spare: how much later than now its next step could
        still start and be done before its client runs dry (less the delivery margin; the lead not counted). A
        request with no audio yet has none (0.0)."""
        if not batch or any(r.first_audio_time is None for r in batch):
            return 0.0
        return min(self._latest_starts(batch, self._costs(batch), lead=False).values()) - time.monotonic()

    def _ready(self, background: bool | None = None) -> list[Request]:
        """Running requests a worker may step now (not finished, not in flight); ``background`` as in ``pick``."""
        return [
            r
            for r in self.running
            if r.slot is not None
            and not r.slot.is_finished
            and not r.in_flight
            and (background is None or r.background == background)
        ]

    def _costs(self, ready: list[Request]) -> dict[int, float]:
        """Each request's estimated next step (by ``id``)."""
        return {id(r): self._cost(r.slot) if r.slot is not None else 0.0 for r in ready}

    def _latest_starts(self, ready: list[Request], costs: dict[int, float], *, lead: bool = True) -> dict[int, float]:
        """When each request's next step must start to be done by its deadline (by ``id``); without ``lead``, by
        when its client would otherwise run dry (less the delivery margin)."""
        target, margin = self.config.first_audio_target_s, self.config.delivery_margin_s
        ahead = self.config.lead if lead else NO_LEAD
        return {id(r): r.deadline(self._sample_rate, target, margin, ahead) - costs[id(r)] for r in ready}

    @property
    def step_budget_s(self) -> float | None:
        """Budget of a lockstep step: the per-worker budget times the workers."""
        if self.config.step_budget_s is None:
            return None
        return self.config.step_budget_s * self.config.num_workers

    def remove(self, req: Request) -> None:
        """Take a finished (or aborted) request out of whichever queue holds it."""
        if req in self.running:
            self.running.remove(req)
            return
        for i, entry in enumerate(self._waiting):
            if entry[-1] is req:
                self._waiting.pop(i)
                heapq.heapify(self._waiting)
                return

    def all_requests(self) -> list[Request]:
        return [*self.running, *(entry[-1] for entry in self._waiting)]
