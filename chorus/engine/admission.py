"""Admission control for compute-bound (CPU) backends: admit a newcomer only if no stream will run dry.

A stream is a chain of future steps (windows), each yielding some seconds of audio for some CPU seconds of
compute (the backend's plan). A running stream's next window is due when its client runs out of audio; each later
one is due when the audio of the windows before it runs out. A newcomer's first window is due ``first_audio_s``
from now, and its later windows as if it started playing then. Every window is due earlier by the lead its stream
is to be kept ahead by then (``Lead``): planned, so that load cannot spend it on newcomers.

The test is EDF's processor-demand bound: taking every window of every stream (running ones plus the candidates)
by deadline, the CPU due by each deadline must fit in what the machine gives the workers by then; and each stream
alone must keep up on one worker (its windows run one after another). What the test plans with is learned from
what happens (``Budget``): how far the backend's CPU estimates fall short (margin), how much CPU serving a second
of audio costs outside the model (HTTP, resampling, encoding), how many cores the machine leaves to the workers
(other processes take their share), and how much of a core one worker gets (its windows' wall time). So a
machine shared with other work admits fewer streams, with no setting to change. A stream already behind its
deadline fails the test, so nobody is admitted while someone is late.

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

from chorus.engine.cpuload import CpuLoad, CpuReading
from chorus.engine.request import NO_LEAD, Lead, Request
from chorus.models.base import Window, WorkPlanner

# Other processes using this many cores' worth make the machine busy: the pipelined engine's extra lanes would
# time-share cores those processes hold, which the demand bound cannot see, so newcomers wait for a worker.
# A hypervisor's steal does not count (cpuload): it slows the lanes and the workers alike, and the cores it takes
# are already out of the capacity.
BUSY_OTHERS_CORES = 0.25

# (deadline, CPU it takes from the machine, wall time on one worker, runs on the newcomer lane: nothing blocks it)
Job = tuple[float, float, float, bool]


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """A stream's remaining work. ``next_due`` is when its next window must be delivered (monotonic seconds);
    ``None`` for a stream not admitted yet (its first window is then due ``first_audio_s`` after admission)."""

    windows: tuple[Window, ...]
    next_due: float | None = None
    starting: bool = False  # admitted, no audio yet: its first window goes to the newcomer lane too
    sent_s: float = 0.0  # audio sent so far: how far ahead its lead has grown (see Lead)


@dataclass(frozen=True, slots=True)
class Budget:
    """What admission plans with, as last learned."""

    capacity: float  # CPU seconds per second the workers may use (cores left to them x max_load)
    margin: float = 1.0  # estimated CPU x margin = CPU a window really takes
    speed: float = 1.0  # share of a core one worker gets: a window's wall time = its CPU / speed
    overhead: float = 0.0  # CPU seconds spent outside the model per second of audio served
    # The newcomer lane may run beside the workers (see AdmissionConfig.newcomer_lane): only while other
    # processes leave the machine quiet, since its thread then shares cores the workers do not fill.
    newcomer_lane: bool = True

    def demand(self, window: Window) -> float:
        return self.margin * window.cost_s + self.overhead * window.audio_s

    def wall(self, window: Window) -> float:
        return self.margin * window.cost_s / self.speed


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    workers: int = 1  # the backend's parallel workers: they can use at most this many cores
    max_load: float = 1.0  # the share of the cores left to the workers that streams may plan on
    first_audio_s: float = 0.25  # a newcomer's first window is due this long after its admission
    delivery_margin_s: float = 0.0  # a running stream's window is due this long before its client runs dry
    lead: Lead = NO_LEAD  # ... and kept this far ahead of it besides, once playing
    # The pipelined engine's newcomer lane runs a newcomer's first window as soon as it is admitted, beside the
    # workers (time-sharing the cores): no window a worker started first blocks it. Its CPU still counts.
    newcomer_lane: bool = False
    # margin: a high quantile of recent (actual / estimated) CPU per step; speed: the median share of a core
    # a worker got while it ran a step (CPU / wall), over recent steps.
    margin_quantile: float = 0.9
    min_margin: float = 1.0
    max_margin: float = 4.0
    min_speed: float = 0.05


def jobs_of(
    plan: StreamPlan,
    start: float,
    first_audio_s: float,
    budget: Budget,
    *,
    newcomer_lane: bool = False,
    lead: Lead = NO_LEAD,
) -> list[Job]:
    """The windows of ``plan`` as jobs, if it is admitted (or running) at ``start``.

    A newcomer's first window is due ``first_audio_s`` after ``start``, or as soon as it can be done alone when
    that is longer (a first window cannot be late for a listener who has heard nothing yet); it plays from then.
    With a ``newcomer_lane``, that first window is not blocked by the workers' windows. Each later window is due
    when the audio before it has played, less the growth of the stream's ``lead`` by then.
    """
    jobs: list[Job] = []
    if not plan.windows:
        return jobs
    first = max(first_audio_s, budget.wall(plan.windows[0]))
    due = start + first if plan.next_due is None else plan.next_due
    lane = newcomer_lane and (plan.next_due is None or plan.starting)
    sent = plan.sent_s
    for window in plan.windows:
        jobs.append((due, budget.demand(window), budget.wall(window), lane))
        due += window.audio_s - (lead(sent + window.audio_s) - lead(sent))
        sent += window.audio_s
        lane = False
    return jobs


def fits(streams: Sequence[list[Job]], now: float, capacity: float) -> bool:
    """The demand bound: for every deadline d, the CPU due by d plus blocking <= capacity x (d - now); and each
    stream's own chain keeps up on one worker (its windows' wall times). Blocking is the longest next window of a
    stream due after d: a worker may have started it first and cannot put it down.

    A window on the newcomer lane neither blocks nor is blocked, and it does not wait for its deadline: it runs
    from now, time-sharing the cores, so it takes its CPU from whatever else is due meanwhile. It counts as
    spent evenly from now until it is done (``now`` + its wall time, or its deadline if sooner): the part of it
    spent by d is due by d.
    """
    if capacity <= 0:
        return False
    for jobs in streams:
        done = 0.0
        for due, _, wall, _ in jobs:
            done += wall
            if done > due - now + 1e-9:
                return False
    regular = sorted(job for jobs in streams for job in jobs if not job[3])
    lane = [job for jobs in streams for job in jobs if job[3]]
    if not regular and not lane:
        return True
    deadlines = np.fromiter((job[0] for job in regular), dtype=np.float64, count=len(regular))
    due_by = np.cumsum(np.fromiter((job[1] for job in regular), dtype=np.float64, count=len(regular)))
    heads = sorted(jobs[0][:2] for jobs in streams if jobs and not jobs[0][3])  # what a worker could be running
    head_due = np.fromiter((d for d, _ in heads), dtype=np.float64, count=len(heads))
    head_demand = np.fromiter((c for _, c in heads), dtype=np.float64, count=len(heads))
    longest_after = np.append(np.maximum.accumulate(head_demand[::-1])[::-1], 0.0)  # [i]: max of heads[i:]
    blocked = longest_after[np.searchsorted(head_due, deadlines, side="right")]
    # Check at every regular deadline (with blocking) and where a lane window's use stops growing (without: no
    # regular window is due there that a worker could hold up).
    lane_demand = np.fromiter((job[1] for job in lane), dtype=np.float64, count=len(lane))
    lane_done = np.fromiter((min(now + job[2], job[0]) for job in lane), dtype=np.float64, count=len(lane))
    points = np.concatenate([deadlines, lane_done])
    extra = np.concatenate([due_by + blocked, np.zeros(len(lane))])
    if len(lane):
        extra[len(regular) :] = np.append(0.0, due_by)[np.searchsorted(deadlines, lane_done, side="right")]
        span = np.maximum(lane_done - now, 1e-9)
        used = lane_demand * np.clip((points[:, None] - now) / span, 0.0, 1.0)  # [point, lane window]
        extra = extra + used.sum(axis=1)
    return bool(np.all(extra <= capacity * (points - now) + 1e-9))


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

    def admissible(
        self, running: Sequence[StreamPlan], candidates: Sequence[StreamPlan], now: float, budget: Budget
    ) -> int:
        """How many of ``candidates`` (in order) can start now: the longest prefix that keeps the bound."""
        streams = [self._jobs(p, now, budget) for p in running]
        return self._admit(streams, candidates, now, budget)

    def predict_starts(
        self,
        running: Sequence[StreamPlan],
        waiting: Sequence[StreamPlan],
        now: float,
        budget: Budget,
        horizon_s: float,
        max_slots: int | None = None,
        start_limits: Sequence[float | None] | None = None,
    ) -> list[float | None]:
        """Seconds from now until each waiting request (in admission order) would start, or None past horizon_s.

        A fluid simulation of the engine: the workers do the pending windows at full capacity in deadline order;
        whenever a window finishes, waiting requests are admitted while the bound holds (the same test as
        ``admissible``) and a slot is free (a stream holds its slot until its last window is done), their
        windows joining the work from then on. A request with a start limit (seconds from now) that it would
        pass is left out from then on, as the engine will refuse it: its entry is the time it was left out
        (past its limit), and the requests behind it move up. One pass, however many are refused.
        """
        first_audio_s = self.config.first_audio_s
        starts: list[float | None] = [None] * len(waiting)
        limits = list(start_limits) if start_limits is not None else [None] * len(waiting)
        streams = [self._jobs(p, now, budget) for p in running]
        t = now
        done = 0
        while done < len(waiting) and t - now <= horizon_s:
            while done < len(waiting) and (limit := limits[done]) is not None and t - now > limit:
                starts[done] = t - now  # refused: the simulation goes on without it
                done += 1
            n = self._admit(streams, waiting[done:], t, budget)
            if max_slots is not None:
                n = min(n, max(0, max_slots - sum(1 for jobs in streams if jobs)))
            for plan in waiting[done : done + n]:
                starts[done] = t - now
                streams.append(self._jobs(plan, t, budget))
                done += 1
            if done >= len(waiting):
                break
            heads = [(jobs[0][0], i) for i, jobs in enumerate(streams) if jobs]
            if not heads:
                t += max(first_audio_s, 1e-3)  # nothing left to do but something still does not fit
                continue
            _, i = min(heads)  # the most urgent window runs to completion, at full capacity (fluid)
            _, demand, _, _ = streams[i].pop(0)
            t += demand / budget.capacity
        return starts

    def _jobs(self, plan: StreamPlan, start: float, budget: Budget) -> list[Job]:
        lane = self.config.newcomer_lane and budget.newcomer_lane
        return jobs_of(plan, start, self.config.first_audio_s, budget, newcomer_lane=lane, lead=self.config.lead)

    def _admit(self, streams: list[list[Job]], candidates: Sequence[StreamPlan], now: float, budget: Budget) -> int:
        if not any(streams) and candidates:
            # Nothing runs: the first may always start (alone it stalls nobody). Without this, a model that
            # learned a wrong cost (a flood's serving overhead) could refuse everyone for ever, since nothing
            # would run to correct it.
            return 1 + self._admit([self._jobs(candidates[0], now, budget)], candidates[1:], now, budget)
        if not fits(streams, now, budget.capacity):
            return 0
        admitted = 0
        for plan in candidates:
            trial = [*streams, self._jobs(plan, now, budget)]
            if not fits(trial, now, budget.capacity):
                break
            streams = trial
            admitted += 1
        return admitted


def _is_quiet(reading: CpuReading) -> bool:
    return reading.others < BUSY_OTHERS_CORES


class PlannedAdmission:
    """The engine's side of admission control: requests → plans → decisions and predicted first-audio times."""

    def __init__(self, planner: WorkPlanner, config: AdmissionConfig, sample_rate: int, cores: int) -> None:
        self.planner = planner
        self.config = config
        self.controller = AdmissionController(config)
        self.load = LoadModel(config)
        self.cpu = CpuLoad(cores)
        self.sample_rate = sample_rate

    def observe_step(self, estimated_cpu_s: float, cpu_s: float, wall_s: float | None, audio_s: float) -> None:
        """A finished step (see LoadModel.observe); its audio counts towards the serving overhead's reading."""
        self.load.observe(estimated_cpu_s, cpu_s, wall_s)
        self.cpu.note_step(cpu_s, audio_s)

    def budget(self) -> Budget:
        """What to plan with now: the workers' share of the cores other processes leave, and what was learned."""
        self.cpu.sample()
        reading = self.cpu.reading()
        capacity = self.config.max_load * min(reading.left, float(self.config.workers))
        quiet = _is_quiet(reading)
        return Budget(capacity, self.load.margin, self.load.speed, reading.overhead, newcomer_lane=quiet)

    def quiet(self) -> bool:
        """Whether other processes leave the machine quiet (see BUSY_OTHERS_CORES), as last read."""
        return _is_quiet(self.cpu.reading())

    def describe(self) -> dict[str, float | bool]:
        budget = self.budget()
        reading = self.cpu.reading()
        return {
            "capacity_cores": round(budget.capacity, 3),
            "other_processes_cores": round(reading.others, 3),
            "stolen_cores": round(reading.stolen, 3),
            "margin": round(budget.margin, 3),
            "speed": round(budget.speed, 3),
            "newcomer_lane": budget.newcomer_lane,
            "overhead_cpu_per_audio_s": round(budget.overhead, 4),
        }

    def running_plan(self, req: Request, now: float, budget: Budget) -> StreamPlan:
        if req.slot is None or req.background:  # a background request only gets CPU live streams leave idle
            return StreamPlan(())
        windows = self.planner.plan(req.slot)
        if req.first_audio_time is not None:
            cfg = self.config
            due = req.deadline(self.sample_rate, margin_s=cfg.delivery_margin_s, lead=cfg.lead)
            return StreamPlan(windows, due, sent_s=req.num_samples_sent / self.sample_rate)
        # Admitted, no audio yet: due when its target says, or as soon as its first window can be done from now.
        admitted = req.admitted_time if req.admitted_time is not None else now
        soonest = now + (budget.wall(windows[0]) if windows else 0.0)
        due = max(admitted + self.controller.config.first_audio_s, soonest)
        later = self._plays_after(req, due)
        return StreamPlan(windows, due, starting=True) if later is None else StreamPlan(windows, later)

    def waiting_plan(self, req: Request, now: float) -> StreamPlan:
        if req.background:
            return StreamPlan(())
        windows = self.planner.plan_input(req.input, req.prepared)
        return StreamPlan(windows, self._plays_after(req, now + self.controller.config.first_audio_s))

    def _plays_after(self, req: Request, due: float) -> float | None:
        """When a segment that plays later (voice-agent sessions) must start arriving, if after ``due``: it is
        then a regular stream due at that time, not a newcomer."""
        needed = req.plays_due(self.config.delivery_margin_s)
        return needed if needed is not None and needed > due else None

    def admissible(self, running: Sequence[Request], waiting: Sequence[Request], now: float, budget: Budget) -> int:
        plans = [self.running_plan(r, now, budget) for r in running]
        return self.controller.admissible(plans, [self.waiting_plan(r, now) for r in waiting], now, budget)

    def predict_first_audio(
        self,
        running: Sequence[Request],
        waiting: Sequence[StreamPlan],
        now: float,
        budget: Budget,
        horizon_s: float,
        max_slots: int | None = None,
        limits: Sequence[float | None] | None = None,
        *,
        probe: bool = False,
    ) -> list[float | None]:
        """Seconds from now until each waiting request's first audio (its start plus its first window), or None
        when it would not start within ``horizon_s``. ``waiting``: the waiting requests' plans (``waiting_plan``),
        in admission order. ``limits``: first-audio limits (seconds from now) of the requests the engine will
        refuse past them (see AdmissionController.predict_starts).

        ``probe``: one more entry at the end, for a newcomer like the last waiting request arriving now, behind
        everyone kept and with no limit: the wait a refused caller (or the next caller) really faces."""
        plans = list(waiting)
        if probe and plans:
            plans.append(plans[-1])
        firsts = [budget.wall(plan.windows[0]) if plan.windows else 0.0 for plan in plans]
        start_limits = None
        if limits is not None:
            start_limits = [None if lim is None else lim - f for lim, f in zip(limits, firsts, strict=False)]
            start_limits += [None] * (len(plans) - len(start_limits))
        running_plans = [self.running_plan(r, now, budget) for r in running]
        starts = self.controller.predict_starts(running_plans, plans, now, budget, horizon_s, max_slots, start_limits)
        return [None if start is None else start + f for start, f in zip(starts, firsts, strict=True)]
