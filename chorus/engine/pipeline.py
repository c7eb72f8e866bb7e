"""The pipelined engine loop for CPU backends with several workers.

In lockstep, a step waits for its slowest slot while the other cores idle, and a newcomer waits for the
whole step. Here each worker (lane) takes the most urgent slot(s) as soon as it is free: the cores stay
busy and a newcomer waits at most for one lane to finish one window. Two extra lanes, used only when
every regular lane is busy, take newcomers (requests with no audio yet) and streams about to run dry, one
lane each: neither queues behind other streams' long windows, and a newcomer never waits behind a rescued
stream's window (a full-size window, up to a third of a second of CPU), which made the tail of first-audio
times. For those moments the cores are shared by one or two more threads. While other processes keep the
machine busy (admission's reading), one extra lane takes both, and admission stops counting on it for newcomers.
A stream becomes urgent with time alone (no request arrives, no worker finishes): while a lane that would take it
is free, the engine thread sleeps only until the first playing stream is due to become urgent.

Those extra threads time-share the cores with the regular lanes, so at equal priority a newcomer's first window got
about two thirds of a core and took ~1.6x its CPU time in wall time. A playing stream has audio in hand and a
newcomer none, so while the machine is otherwise quiet, windows of streams with at least ``LOWERED_SLACK_S`` to
spare run on threads of their own whose nice value is raised by ``worker.playing_nice``: the kernel gives a core to
a first window (and to the extra lanes' rescued streams, which run at normal priority) before them. No core idles
for it, so throughput and admission's plan are unchanged. While other processes keep the machine busy, every live
window runs at normal priority: lowered threads would then also yield to those processes.

Background requests (batch jobs' items: nobody listens while they are made) never take those lanes. They run on
lanes of their own, as many as the regular ones, whose threads the kernel schedules only on CPU nothing else
wants (``SCHED_IDLE``; nice 19 where that is refused): a running job then takes nothing from a live stream's
first audio, and admission control plans live streams as if it were not there.

Still one engine thread owns all state: workers only run ``engine.execute`` on disjoint slots, and every
output is applied here, in arrival order of completions.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from chorus.engine.engine import Engine
    from chorus.engine.request import Request
    from chorus.models.base import StepOutput

# The extra lanes take newcomers, and streams that must start within this long to reach their client in time.
URGENT_WITHIN_S = 0.15
# A playing stream's window runs on a lowered thread only with at least this long to spare: a first window beside it
# (~0.1-0.15 s) may take most of its core meanwhile. With less, and always for a first window, normal priority.
LOWERED_SLACK_S = 0.3
Lane = Literal["regular", "newcomer", "rescue", "urgent", "background"]
# The extra lanes and whom each takes: requests with no audio yet (True), streams already playing (False).
URGENT_LANES: tuple[tuple[Lane, bool | None], ...] = (("newcomer", True), ("rescue", False))
# While other processes keep the machine busy, one extra thread at most: it takes both (None), most urgent first.
BUSY_URGENT_LANES: tuple[tuple[Lane, bool | None], ...] = (("urgent", None),)
Work = Future[tuple[list["StepOutput"], float]]
log = logging.getLogger(__name__)


def run_pipelined(engine: Engine) -> None:
    lanes = engine.backend.num_workers
    # One slot per dispatch: its audio leaves the moment its own window is done (a batch would hold it for its
    # slowest member), and a lane stays one thread on one core.
    budget = 0.0
    in_flight: dict[Work, tuple[list[Request], Lane]] = {}  # future → (its slots, its lane)

    def dispatch(pool: ThreadPoolExecutor, batch: list[Request], lane: Lane) -> None:
        engine.begin(batch)
        future = pool.submit(engine.execute, batch)
        future.add_done_callback(lambda _: engine.wake())
        in_flight[future] = (batch, lane)

    nice = engine.config.playing_nice
    with (
        ThreadPoolExecutor(lanes + 2, thread_name_prefix="chorus-lane") as pool,
        ThreadPoolExecutor(
            lanes, thread_name_prefix="chorus-playing", initializer=lower_priority, initargs=(nice,)
        ) as lowered,
        ThreadPoolExecutor(lanes, thread_name_prefix="chorus-background", initializer=idle_priority) as background,
    ):
        playing = lowered if nice else pool
        while True:
            for future in [f for f in in_flight if f.done()]:
                batch, _ = in_flight.pop(future)
                outputs, duration = future.result()  # a backend failure propagates: the engine dies
                engine.complete(batch, outputs, duration)
            engine.prepare()  # after completions: the slots they freed go to waiting requests at once
            busy_background = lanes_of(in_flight.values(), background=True).count("background")
            while busy_background < lanes and (batch := engine.scheduler.pick(budget, background=True)):
                dispatch(background, batch, "background")
                busy_background += 1
            busy = lanes_of(in_flight.values())
            busy_regular = busy.count("regular")
            quiet = engine.admission is None or engine.admission.quiet()
            while busy_regular < lanes and (batch := engine.scheduler.pick(budget, background=False)):
                # Streams with audio in hand on the lowered threads while the machine is otherwise quiet (above).
                lowers = quiet and engine.scheduler.slack_s(batch) >= LOWERED_SLACK_S
                dispatch(playing if lowers else pool, batch, "regular")
                busy_regular += 1
            wake_at = None
            if busy_regular >= lanes:
                for lane, newcomers in URGENT_LANES if quiet else BUSY_URGENT_LANES:
                    if lane in busy or (not quiet and len(busy) > busy_regular):
                        continue
                    urgent = engine.scheduler.pick(
                        budget, urgent_within_s=URGENT_WITHIN_S, newcomers=newcomers, background=False
                    )
                    if urgent:
                        dispatch(pool, urgent, lane)
                if rescue_lane_free(lanes_of(in_flight.values()), quiet):
                    # A stream may become urgent while every worker is busy and nothing arrives: wake for it then.
                    wake_at = engine.scheduler.next_urgent_at(URGENT_WITHIN_S)
            if not in_flight:
                if not engine.wait_for_work(engine.has_work):
                    return
                continue
            engine.wait_for_work(lambda: any(f.done() for f in in_flight), wait_s(wake_at))


def lanes_of(work: Iterable[tuple[list[Request], Lane]], *, background: bool = False) -> list[Lane]:
    """The lanes of the work in flight: the live ones (or the background ones, with ``background``)."""
    return [lane for _, lane in work if (lane == "background") == background]


def idle_priority() -> None:
    """Make the calling thread run only on CPU nothing else wants (Linux: SCHED_IDLE for this thread alone; else
    nice 19). A thread may always lower its own priority; it could not raise it back, and never needs to."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # Linux: 0 is the calling thread
    except (AttributeError, OSError) as e:
        log.warning("background lanes run at normal priority: %r", e)


def lower_priority(by: int) -> None:
    """Raise the calling thread's nice value by ``by`` (at most to 19), on Linux, where nice is per thread; a
    no-op elsewhere (there it would lower the whole process)."""
    if by <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + by, 19))
    except OSError as e:
        log.warning("playing streams' lanes run at normal priority: %r", e)


def rescue_lane_free(busy: list[Lane], quiet: bool) -> bool:
    """Whether an extra lane that takes playing streams is free (``busy``: the lanes of the work in flight)."""
    if quiet:
        return "rescue" not in busy
    return len(busy) == busy.count("regular")  # a busy machine: one extra lane at most, and none is in use


def wait_s(wake_at: float | None, longest_s: float = 0.5) -> float:
    """How long the engine thread may sleep waiting for work, to be up again by ``wake_at`` (monotonic)."""
    if wake_at is None:
        return longest_s
    return min(longest_s, max(wake_at - time.monotonic(), 0.001))
