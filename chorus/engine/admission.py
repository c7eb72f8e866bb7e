"""Admission control for compute-bound (CPU) backends: admit a newcomer only if no stream will run dry.

A stream is a chain of future steps (windows), each yielding some seconds of audio for some seconds of compute
(the backend's plan). A running stream's next window is due when its client runs out of audio; each later one is
due when the audio of the windows before it runs out. A newcomer's first window is due ``first_audio_s`` from
now, and its later windows as if it started playing then.

The test is EDF's processor-demand bound: taking every window of every stream (running ones plus the candidates)
by deadline, the compute due by each deadline must fit in what ``capacity`` workers do by then; and each stream
alone must fit on one worker (its windows run one after another). Costs are estimated CPU seconds, turned into a
worker's wall seconds by a factor learned from recent steps (``LoadModel``): the margin by which estimates fall
short, divided by the share of a core a worker really gets. So a machine shared with other work (or a server
busy with its own I/O) admits fewer streams, with no setting to change. A stream already
behind its deadline fails the test, so nobody is admitted while someone is late.

The same model predicts waits: simulated forward (work done at full capacity, in deadline order), the time at
which each waiting request would pass the test gives its ETA, so a caller whose wait would exceed its limit is
told so at once (429) instead of timing out in the queue.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chorus.engine.request import Request
from chorus.models.base import Window, WorkPlanner


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """A stream's remaining work. ``next_due`` is when its next window must be delivered (monotonic seconds);
    ``None`` for a stream not admitted yet (its first window is then due ``first_audio_s`` after admission)."""

    windows: tuple[Window, ...]
    next_due: float | None = None

    @property
    def cost_s(self) -> float:
        return sum(w.cost_s for w in self.windows)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    capacity: float  # workers the streams may plan on (workers x max_load), each at the measured speed
    first_audio_s: float = 0.25  # a newcomer's first window is due this long after its admission
    # Costs are CPU seconds. margin: a high quantile of recent (actual / estimated) CPU per step;
    # speed: the median share of a core a worker got while it ran a step (CPU / wall), over recent steps.
    margin_quantile: float = 0.9
    min_margin: float = 1.0
    max_margin: float = 4.0
    min_speed: float = 0.05


def _jobs(plan: StreamPlan, start: float, first_audio_s: float, factor: float) -> list[tuple[float, float]]:
    """(deadline, cost) of each window of ``plan`` if it is admitted (or running) at ``start``.

    A newcomer's first window is due ``first_audio_s`` after ``start``, or as soon as it can be done alone when
    that is longer (a first window cannot be late for a listener who has heard nothing yet); it plays from then.
    """
    jobs: list[tuple[float, float]] = []
    if not plan.windows:
        return jobs
    first = max(first_audio_s, factor * plan.windows[0].cost_s)
    due = start + first if plan.next_due is None else plan.next_due
    for window in plan.windows:
        jobs.append((due, window.cost_s))
        due += window.audio_s
    return jobs


def fits(streams: Sequence[list[tuple[float, float]]], now: float, capacity: float, factor: float = 1.0) -> bool:
    """The demand bound: for every deadline d, factor x (cost due by d + blocking) <= capacity x (d - now); and
    each stream's own chain fits on one worker. Blocking is the longest next window of a stream due after d: a
    worker may have started it first and cannot put it down. Jobs are (deadline, cost) lists, one per stream;
    ``factor`` turns a cost into a worker's wall seconds."""
    if capacity <= 0:
        return False
    for jobs in streams:
        done = 0.0
        for due, cost in jobs:
            done += factor * cost
            if done > due - now + 1e-9:
                return False
    merged = sorted(job for jobs in streams for job in jobs)
    if not merged:
        return True
    deadlines = np.fromiter((d for d, _ in merged), dtype=np.float64, count=len(merged))
    costs = np.fromiter((c for _, c in merged), dtype=np.float64, count=len(merged))
    heads = sorted(jobs[0] for jobs in streams if jobs)  # the windows a worker could be running now
    head_due = np.fromiter((d for d, _ in heads), dtype=np.float64, count=len(heads))
    head_cost = np.fromiter((c for _, c in heads), dtype=np.float64, count=len(heads))
    longest_after = np.append(np.maximum.accumulate(head_cost[::-1])[::-1], 0.0)  # [i]: max cost of heads[i:]
    blocking = longest_after[np.searchsorted(head_due, deadlines, side="right")]
    return bool(np.all(factor * (np.cumsum(costs) + blocking) <= capacity * (deadlines - now) + 1e-9))


class LoadModel:
    """What recent steps taught (thread-safe): how far CPU estimates fall short, and how much of a core a worker
    really gets (less when other processes, the server's own I/O or more threads than cores share the machine)."""

    def __init__(self, config: AdmissionConfig, history: int = 64) -> None:
        self._config = config
        self._ratios: deque[float] = deque(maxlen=history)
        self._speeds: deque[float] = deque(maxlen=history)
        self._lock = threading.Lock()
        self.margin = config.min_margin
        self.speed = 1.0

    def observe(self, estimated_cpu_s: float, cpu_s: float, wall_s: float | None) -> None:
        """One step: its estimated and measured CPU seconds, and its wall time (None when several slots ran in
        parallel, so that no single worker's speed can be read off it)."""
        cfg = self._config
        with self._lock:
            if estimated_cpu_s > 0 and cpu_s > 0:
                self._ratios.append(cpu_s / estimated_cpu_s)
                q = float(np.quantile(np.asarray(self._ratios), cfg.margin_quantile))
                self.margin = min(cfg.max_margin, max(cfg.min_margin, q))
            if wall_s is not None and wall_s > 0 and cpu_s > 0:
                self._speeds.append(min(1.0, cpu_s / wall_s))
                self.speed = max(cfg.min_speed, float(np.median(np.asarray(self._speeds))))

    def wall_factor(self) -> float:
        """Estimated CPU seconds x this = wall seconds a step takes on one worker."""
        return self.margin / self.speed


class AdmissionController:
    """Decides who may start now and predicts when the others will (see the module docstring)."""

    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self.load = LoadModel(config)

    def admissible(self, running: Sequence[StreamPlan], candidates: Sequence[StreamPlan], now: float) -> int:
        """How many of ``candidates`` (in order) can start now: the longest prefix that keeps the bound."""
        cfg = self.config
        factor = self.load.wall_factor()
        streams = [_jobs(p, now, cfg.first_audio_s, factor) for p in running]
        if not fits(streams, now, cfg.capacity, factor):
            return 0
        admitted = 0
        for plan in candidates:
            trial = [*streams, _jobs(plan, now, cfg.first_audio_s, factor)]
            if not fits(trial, now, cfg.capacity, factor):
                break
            streams = trial
            admitted += 1
        return admitted

    def predict_starts(
        self, running: Sequence[StreamPlan], waiting: Sequence[StreamPlan], now: float, horizon_s: float
    ) -> list[float | None]:
        """Seconds from now until each waiting request (in admission order) would start, or None past horizon_s.

        A fluid simulation of the engine: the workers do the pending windows at full capacity in deadline order
        (at their learned wall cost); whenever a window finishes, waiting requests are admitted while the bound
        holds, their windows joining the work from then on.
        """
        cfg = self.config
        factor = self.load.wall_factor()
        starts: list[float | None] = [None] * len(waiting)
        # Pending work as mutable [deadline, cost, stream] entries; a stream's windows keep their order.
        streams = [_jobs(p, now, cfg.first_audio_s, factor) for p in running]
        t = now
        next_waiting = 0
        while next_waiting < len(waiting) and t - now <= horizon_s:
            n = self._admit_in_simulation(streams, waiting[next_waiting:], t, factor)
            for k in range(n):
                starts[next_waiting + k] = t - now
                streams.append(_jobs(waiting[next_waiting + k], t, cfg.first_audio_s, factor))
            next_waiting += n
            if next_waiting >= len(waiting):
                break
            # Run the most urgent pending window to completion (fluid: at full capacity).
            heads = [(jobs[0][0], i) for i, jobs in enumerate(streams) if jobs]
            if not heads:
                t += max(cfg.first_audio_s, 1e-3)  # nothing left to do but something still does not fit
                continue
            _, i = min(heads)
            _, cost = streams[i].pop(0)
            t += factor * cost / cfg.capacity
        return starts

    def _admit_in_simulation(
        self, streams: list[list[tuple[float, float]]], queue: Sequence[StreamPlan], t: float, factor: float
    ) -> int:
        cfg = self.config
        ahead = list(streams)  # the same test as admissible(): a window late in the simulation blocks it too
        if not fits(ahead, t, cfg.capacity, factor):
            return 0
        admitted = 0
        for plan in queue:
            trial = [*ahead, _jobs(plan, t, cfg.first_audio_s, factor)]
            if not fits(trial, t, cfg.capacity, factor):
                break
            ahead = trial
            admitted += 1
        return admitted


class PlannedAdmission:
    """The engine's side of admission control: requests → plans → decisions and predicted first-audio times."""

    def __init__(self, planner: WorkPlanner, controller: AdmissionController, sample_rate: int) -> None:
        self.planner = planner
        self.controller = controller
        self.sample_rate = sample_rate

    def describe(self) -> dict[str, float]:
        load = self.controller.load
        return {
            "capacity_workers": self.controller.config.capacity,
            "margin": round(load.margin, 3),
            "speed": round(load.speed, 3),
            "wall_factor": round(load.wall_factor(), 3),
        }

    def running_plan(self, req: Request, now: float) -> StreamPlan:
        if req.slot is None:
            return StreamPlan(())
        windows = self.planner.plan(req.slot)
        if req.first_audio_time is not None:
            return StreamPlan(windows, req.deadline(self.sample_rate))
        # Admitted, no audio yet: due when its target says, or as soon as its first window can be done from now.
        admitted = req.admitted_time if req.admitted_time is not None else now
        soonest = now + self.controller.load.wall_factor() * (windows[0].cost_s if windows else 0.0)
        return StreamPlan(windows, max(admitted + self.controller.config.first_audio_s, soonest))

    def waiting_plan(self, req: Request) -> StreamPlan:
        return StreamPlan(self.planner.plan_input(req.input, req.prepared))

    def admissible(self, running: Sequence[Request], waiting: Sequence[Request], now: float) -> int:
        plans = [self.running_plan(r, now) for r in running]
        return self.controller.admissible(plans, [self.waiting_plan(r) for r in waiting], now)

    def predict_first_audio(
        self, running: Sequence[Request], waiting: Sequence[Request], now: float, horizon_s: float
    ) -> list[float | None]:
        """Seconds from now until each waiting request's first audio (its start plus its first window), or None
        when it would not start within ``horizon_s``."""
        plans = [self.waiting_plan(r) for r in waiting]
        starts = self.controller.predict_starts([self.running_plan(r, now) for r in running], plans, now, horizon_s)
        factor = self.controller.load.wall_factor()
        return [
            None if start is None else start + factor * (plan.windows[0].cost_s if plan.windows else 0.0)
            for start, plan in zip(starts, plans, strict=True)
        ]
