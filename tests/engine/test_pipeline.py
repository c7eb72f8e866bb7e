"""The pipelined loop (CPU backends with several workers) on the fake backend, through the engine thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from chorus.engine.pipeline import idle_priority
from chorus.engine.request import RequestStatus
from chorus.errors import EngineDeadError
from chorus.models.base import SlotState, StepOutput
from tests.engine.helpers import make_engine, submit, wait_final
from tests.fakes import FakeBackend, FakeSlot, SlowTextBackend, expected_audio

WORDS = "one two three four five six seven eight nine ten eleven twelve"


def cpu_backend(**kwargs: object) -> FakeBackend:
    return FakeBackend(is_compute_bound=True, num_workers=2, step_delay_s=0.005, **kwargs)  # type: ignore[arg-type]


def test_lanes_run_requests_concurrently_and_keep_each_stream_exact() -> None:
    backend = cpu_backend()
    engine = make_engine(backend, max_slots=8, step_budget_s=0.001)
    assert engine.is_pipelined
    engine.start()
    texts = {f"r{i}": " ".join(WORDS.split()[: 3 + i]) for i in range(6)}
    sinks = {rid: submit(engine, text, rid)[1] for rid, text in texts.items()}
    wait_final(list(sinks.values()))
    engine.shutdown()
    for rid, sink in sinks.items():
        assert sink.status == RequestStatus.FINISHED_STOPPED
        np.testing.assert_array_equal(sink.audio(), expected_audio(texts[rid]))
    assert all(len(step) == 1 for step in backend.steps)  # the budget allows one slot per dispatch
    assert sorted(backend.released) == sorted(texts)


def test_abort_and_timeout_while_in_flight_are_applied_when_the_slot_returns() -> None:
    backend = cpu_backend()
    engine = make_engine(backend, max_slots=8)
    engine.start()
    _, aborted = submit(engine, WORDS * 20, "aborted")
    _, expired = submit(engine, WORDS * 20, "expired", timeout_s=0.05)
    _, normal = submit(engine, WORDS, "normal")
    time.sleep(0.03)
    engine.abort("aborted")
    wait_final([aborted, expired, normal])
    engine.shutdown()
    assert aborted.status == RequestStatus.FINISHED_ABORTED
    assert expired.status == RequestStatus.FINISHED_TIMEOUT
    assert normal.status == RequestStatus.FINISHED_STOPPED
    np.testing.assert_array_equal(normal.audio(), expected_audio(WORDS))
    assert {"aborted", "expired", "normal"} <= set(backend.released)


def test_a_failing_lane_kills_the_engine_and_fails_everyone() -> None:
    engine = make_engine(cpu_backend(fail_on_step=4), max_slots=2)
    engine.start()
    sinks = [submit(engine, WORDS, f"r{i}")[1] for i in range(4)]
    wait_final(sinks)
    assert all(isinstance(s.final.error, EngineDeadError) for s in sinks)  # type: ignore[union-attr]
    assert not engine.is_alive()


class LateChunks:
    """The engine's events, keeping how late each playing stream's audio left (> 0: its client ran dry)."""

    def __init__(self) -> None:
        self.late: list[float] = []

    def step(self, duration_s: float, num_slots: int, audio_s: float) -> None:
        pass

    def first_audio(self, seconds: float) -> None:
        pass

    def chunk(self, gap_s: float, late_s: float) -> None:
        self.late.append(late_s)

    def finished(self, status: str, service_s: float | None, audio_s: float) -> None:
        pass


def test_a_stream_that_becomes_urgent_while_every_worker_is_busy_is_rescued_in_time() -> None:
    # Both workers are on long windows and nothing arrives or finishes: the engine thread must still wake when
    # the playing stream's next window has to start, and give it to the spare lane, not let it run dry.
    backend = SlowTextBackend(is_compute_bound=True, num_workers=2, sample_rate=333)  # a frame is 0.3 s of audio
    engine = make_engine(backend, max_slots=4, step_budget_s=0.001)
    events = LateChunks()
    engine.metrics.events = events
    engine.start()
    slow = [submit(engine, "slow", f"slow-{i}")[1] for i in range(2)]
    time.sleep(0.05)  # both workers hold a slow window now
    _, stream = submit(engine, "one two three", "stream")
    wait_final([stream])
    assert len(backend.steps) == 3 and stream.status == RequestStatus.FINISHED_STOPPED  # slow windows still run
    wait_final(slow)
    engine.shutdown()
    np.testing.assert_array_equal(stream.audio(), expected_audio("one two three"))
    assert len(events.late) == 2 and max(events.late) < 0  # each next frame came before the last one ran out


@dataclass
class LaneRecordingBackend(SlowTextBackend):
    """Notes, for every slot it steps, the thread that stepped it, that thread's scheduling policy and nice value,
    and which of the slot's steps it was."""

    lanes: list[tuple[str, str, int]] = field(default_factory=list)  # (request text, thread name, policy)
    nices: list[tuple[str, int, int]] = field(default_factory=list)  # (request text, its step's index, nice)

    def step(self, slots: Sequence[SlotState]) -> list[StepOutput]:
        policy = os.sched_getscheduler(0)
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        name = threading.current_thread().name
        for s in slots:
            if isinstance(s, FakeSlot):
                self.lanes.append((s.text, name, policy))
                self.nices.append((s.text, s.cursor, nice))
        return super().step(slots)


def test_background_requests_run_only_on_idle_priority_lanes_and_never_take_a_live_lane() -> None:
    backend = LaneRecordingBackend(is_compute_bound=True, num_workers=2, slow_s=0.3)
    engine = make_engine(backend, max_slots=8, step_budget_s=0.001)
    engine.start()
    jobs = [submit(engine, f"slow job {i}", f"job-{i}", background=True)[1] for i in range(3)]
    time.sleep(0.05)  # both background lanes hold a job's window; the third job waits for one of them
    lives = [submit(engine, f"one two three {i}", f"live-{i}")[1] for i in range(2)]
    wait_final(lives)
    assert any(s.status is None for s in jobs)  # live requests finished while jobs were still running
    wait_final(jobs)
    engine.shutdown()
    for i, sink in enumerate(jobs):
        np.testing.assert_array_equal(sink.audio(), expected_audio(f"slow job {i}"))
    for i, sink in enumerate(lives):
        np.testing.assert_array_equal(sink.audio(), expected_audio(f"one two three {i}"))
    background = [(name, policy) for text, name, policy in backend.lanes if text.startswith("slow job")]
    live = [(name, policy) for text, name, policy in backend.lanes if text.startswith("one two")]
    assert background and all(n.startswith("chorus-background") and p == os.SCHED_IDLE for n, p in background)
    # Live windows went to the ordinary lanes (both free of background work), at the normal policy.
    assert live and all(n.startswith("chorus-lane") and p == os.SCHED_OTHER for n, p in live)
    assert len({n for n, _ in background}) == 2  # as many background lanes as workers


def test_idle_priority_lowers_only_the_calling_thread() -> None:
    seen: list[int] = []

    def lower() -> None:
        idle_priority()
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=lower)
    thread.start()
    thread.join()
    assert seen == [os.SCHED_IDLE]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread (and the process) untouched


def test_playing_streams_with_audio_in_hand_run_on_lowered_threads_and_first_windows_at_normal_priority() -> None:
    # A newcomer's first window competes for a core only with playing streams, which have audio in hand: with
    # playing_nice, the kernel gives the core to the first window. A fake frame is 0.1 s of audio and steps take
    # microseconds, so a stream's k-th step has ~k/10 s to spare: below LOWERED_SLACK_S (0.3) it runs at normal
    # priority too. Without playing_nice, every live window runs alike.
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    words = WORDS.split()
    for playing_nice, ahead in ((5, min(base + 5, 19)), (0, base)):
        backend = LaneRecordingBackend(is_compute_bound=True, num_workers=2)
        engine = make_engine(backend, max_slots=4, step_budget_s=0.001, max_load=None, playing_nice=playing_nice)
        engine.start()
        texts = [" ".join(words[i:] + words[:i]) for i in range(3)]
        sinks = [submit(engine, text, f"r{i}")[1] for i, text in enumerate(texts)]
        wait_final(sinks)
        engine.shutdown()
        for text, sink in zip(texts, sinks, strict=True):
            np.testing.assert_array_equal(sink.audio(), expected_audio(text))
        pressed = {nice for _, step, nice in backend.nices if step <= 2}  # first windows; < 0.3 s in hand
        well_ahead = {nice for _, step, nice in backend.nices if step >= 8}  # ~0.8 s in hand
        assert pressed == {base} and well_ahead == {ahead}, (playing_nice, backend.nices)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # this thread untouched
