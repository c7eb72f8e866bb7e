"""The engine loop on a deterministic fake backend: joins, leaves, modes, priorities, limits, failures."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from chorus.engine.request import RequestStatus
from chorus.errors import (
    EngineDeadError,
    EngineStalledError,
    InvalidRequestError,
    QueueFullError,
    RequestTimeoutError,
    SynthesisError,
)
from chorus.speech import SpeechOrder
from tests.engine.helpers import make_engine, run_until_idle, speech_service, submit, wait_final
from tests.fakes import FRAME_SAMPLES, FakeBackend, FakePlannerBackend, SlowTextBackend, expected_audio

TEN = "one two three four five six seven eight nine ten"


def test_requests_join_and_leave_mid_generation() -> None:
    backend = FakeBackend()
    engine = make_engine(backend)
    _, a = submit(engine, TEN, "a")
    for _ in range(3):
        engine.step()
    _, b = submit(engine, "short one here", "b")  # joins while a runs
    for _ in range(2):
        engine.step()
    _, c = submit(engine, "late comer with five words", "c")
    run_until_idle(engine)

    for sink, text in ((a, TEN), (b, "short one here"), (c, "late comer with five words")):
        assert sink.status == RequestStatus.FINISHED_STOPPED
        np.testing.assert_array_equal(sink.audio(), expected_audio(text))
    steps = backend.steps
    assert steps[0] == ["a"]
    assert steps[3] == ["a", "b"]  # b joined at a step boundary, mid-way through a
    b_last = max(i for i, s in enumerate(steps) if "b" in s)
    a_last = max(i for i, s in enumerate(steps) if "a" in s)
    assert b_last < a_last  # b left while a was still running
    assert any(s == ["a", "c"] for s in steps)  # c joined after b had left
    assert sorted(backend.released) == ["a", "b", "c"]


def test_static_mode_batches_start_and_finish_together() -> None:
    backend = FakeBackend()
    engine = make_engine(backend, max_slots=2, mode="static")
    submit(engine, "a b c d e", "long")
    submit(engine, "a b", "short")
    _, late = submit(engine, "x y", "late")
    run_until_idle(engine)
    first_batch = [s for s in backend.steps if "late" not in s]
    assert len(first_batch) == 5  # the long request sets the batch length
    assert all("late" not in s for s in backend.steps[:5])
    assert backend.steps[5:] == [["late"], ["late"]]  # admitted only once the whole batch was done
    np.testing.assert_array_equal(late.audio(), expected_audio("x y"))


def test_priority_then_arrival_decides_admission() -> None:
    backend = FakeBackend()
    engine = make_engine(backend, max_slots=1)
    submit(engine, "busy busy", "running")
    engine.step()
    submit(engine, "low one", "low-1")
    submit(engine, "high one", "high", priority=5)
    submit(engine, "low two", "low-2")
    run_until_idle(engine)
    order = []
    for step in backend.steps:
        if step[0] not in order:
            order.append(step[0])
    assert order == ["running", "high", "low-1", "low-2"]


def test_queue_full_refuses_with_retry_after() -> None:
    engine = make_engine(FakeBackend(), max_slots=1, queue_limit=2)
    submit(engine, "a", "r1")
    submit(engine, "b", "r2")
    with pytest.raises(QueueFullError) as info:
        submit(engine, "c", "r3")
    assert info.value.retry_after_s >= 1
    engine.step()  # r1 takes the slot: one waiting place frees up
    submit(engine, "c", "r3")


def test_queue_position_and_eta() -> None:
    engine = make_engine(FakeBackend(), max_slots=1)
    submit(engine, "a b c", "first")
    engine.step()
    submit(engine, "b", "second")
    submit(engine, "c", "third")
    engine.step()
    second, third = engine.status("second"), engine.status("third")
    assert second is not None and third is not None
    assert (second.queue_position, third.queue_position) == (0, 1)
    assert second.eta_s is not None and third.eta_s is not None and third.eta_s >= second.eta_s > 0
    running = engine.status("first")
    assert running is not None and running.status == "running" and running.queue_position is None
    assert engine.status("nope") is None


def test_abort_frees_the_slot_at_the_next_step() -> None:
    backend = FakeBackend()
    engine = make_engine(backend, max_slots=1)
    _, victim = submit(engine, TEN, "victim")
    _, waiting = submit(engine, "next in line", "next")
    engine.step()
    engine.abort("victim")
    engine.step()
    assert victim.status == RequestStatus.FINISHED_ABORTED
    assert "victim" in backend.released
    assert backend.steps[-1] == ["next"]  # the freed slot went to the waiting request
    run_until_idle(engine)
    assert waiting.status == RequestStatus.FINISHED_STOPPED


def test_timeout_while_waiting_and_while_running() -> None:
    engine = make_engine(FakeBackend(), max_slots=1)
    running, run_sink = submit(engine, TEN, "running", timeout_s=60)
    waiting, wait_sink = submit(engine, "never starts", "waiting", timeout_s=60)
    engine.step()
    waiting.arrival_time -= 61  # it has now waited past its budget
    engine.step()
    assert wait_sink.status == RequestStatus.FINISHED_TIMEOUT
    assert isinstance(wait_sink.final.error, RequestTimeoutError)  # type: ignore[union-attr]
    assert wait_sink.audio().size == 0
    running.arrival_time -= 61
    engine.step()
    assert run_sink.status == RequestStatus.FINISHED_TIMEOUT
    assert 0 < run_sink.audio().size < expected_audio(TEN).size  # it streamed, then stopped


def test_a_failing_slot_fails_alone() -> None:
    engine = make_engine(FakeBackend(fail_text="poison"))
    _, bad = submit(engine, "poison pill", "bad")
    _, good = submit(engine, "fine words", "good")
    run_until_idle(engine)
    assert bad.status == RequestStatus.FINISHED_ERROR
    assert isinstance(bad.final.error, SynthesisError)  # type: ignore[union-attr]
    assert good.status == RequestStatus.FINISHED_STOPPED


def test_prefill_blames_the_client_only_for_inputs_the_backend_cannot_speak() -> None:
    # ValueError from prefill: the input's fault (400); anything else: the backend's (500). Either fails alone.
    backend = FakeBackend(prefill_errors={"unspeakable": ValueError("no phonemes"), "crash": RuntimeError("oom")})
    engine = make_engine(backend)
    _, bad_input = submit(engine, "unspeakable words", "bad-input")
    _, fault = submit(engine, "crash now", "fault")
    _, good = submit(engine, "fine words", "good")
    run_until_idle(engine)
    assert bad_input.status == fault.status == RequestStatus.FINISHED_ERROR
    assert isinstance(bad_input.final.error, InvalidRequestError)  # type: ignore[union-attr]
    assert isinstance(fault.final.error, SynthesisError)  # type: ignore[union-attr]
    assert fault.final.error.status_code == 500  # type: ignore[union-attr]
    assert good.status == RequestStatus.FINISHED_STOPPED
    np.testing.assert_array_equal(good.audio(), expected_audio("fine words"))


def test_max_frames_stops_runaway_autoregressive_requests() -> None:
    engine = make_engine(FakeBackend(is_autoregressive=True), max_frames=3)
    _, sink = submit(engine, TEN, "runaway")
    run_until_idle(engine)
    assert sink.status == RequestStatus.FINISHED_STOPPED
    np.testing.assert_array_equal(sink.audio(), expected_audio(TEN)[: 3 * FRAME_SAMPLES])


def test_engine_failure_fails_every_request_instead_of_hanging() -> None:
    backend = FakeBackend(fail_on_step=2)
    engine = make_engine(backend, max_slots=1)
    sinks = [submit(engine, TEN, f"r{i}")[1] for i in range(3)]  # one running, two waiting
    engine.start()
    deadline = time.monotonic() + 5
    while any(s.final is None for s in sinks) and time.monotonic() < deadline:
        time.sleep(0.01)
    for sink in sinks:
        assert sink.status == RequestStatus.FINISHED_ERROR
        assert isinstance(sink.final.error, EngineDeadError)  # type: ignore[union-attr]
    assert not engine.is_alive()
    with pytest.raises(EngineDeadError):
        submit(engine, "too late", "late")


def test_async_client_propagates_engine_failure() -> None:
    async def scenario() -> None:
        engine = make_engine(FakeBackend(fail_on_step=1, step_delay_s=0.01))
        client, speech = speech_service(engine)
        client.start()
        stream = await speech.open(SpeechOrder(TEN))
        with pytest.raises(EngineDeadError):
            async for _ in stream:
                pass
        await client.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def test_async_client_streams_and_aborts() -> None:
    async def scenario() -> None:
        backend = FakeBackend(step_delay_s=0.005)
        engine = make_engine(backend)
        client, speech = speech_service(engine)
        client.start()
        full = await speech.open(SpeechOrder("a b c d"))
        audio = np.concatenate([out.audio async for out in full])
        np.testing.assert_array_equal(audio, expected_audio("a b c d"))
        partial = await speech.open(SpeechOrder(TEN * 20))
        await anext(partial)
        partial.abort()
        for _ in range(200):
            if partial.request_id in backend.released:
                break
            await asyncio.sleep(0.01)
        assert partial.request_id in backend.released
        await client.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


@pytest.mark.parametrize("workers", [1, 2], ids=["lockstep", "pipelined"])
def test_the_watchdog_fails_every_request_when_a_step_hangs(workers: int) -> None:
    gate = threading.Event()  # never set: every step hangs (until the fake's own 10 s bound)
    backend = FakePlannerBackend(gate=gate, num_workers=workers)
    engine = make_engine(backend, stall_timeout_s=0.5, max_load=None)
    assert engine.is_pipelined == (workers > 1)
    engine.start()
    started = time.monotonic()
    sinks = [submit(engine, "one two three", f"r{i}")[1] for i in range(3)]
    wait_final(sinks, timeout_s=5)
    assert time.monotonic() - started < 4  # 0.5 s limit, checked every 0.125 s, 1 s for the engine thread
    for sink in sinks:
        assert sink.status == RequestStatus.FINISHED_ERROR
        assert isinstance(sink.final.error, EngineStalledError) and sink.final.error.code == "engine_stalled"
    assert not engine.is_alive()
    with pytest.raises(EngineStalledError):
        submit(engine, "later", "r9")
    gate.set()


def test_the_watchdog_leaves_slow_but_moving_steps_alone() -> None:
    backend = FakeBackend(step_delay_s=0.05)
    engine = make_engine(backend, stall_timeout_s=0.5)
    engine.start()
    sinks = [submit(engine, " ".join(["word"] * 30), f"r{i}")[1] for i in range(2)]  # 30 steps of 50 ms each
    wait_final(sinks, timeout_s=10)
    assert all(s.status == RequestStatus.FINISHED_STOPPED for s in sinks)
    assert engine.is_alive() and engine.steps.stalled_for_s() == 0.0
    engine.shutdown()


def test_the_watchdog_does_not_time_background_steps() -> None:
    # A background lane's step gets only idle CPU: under live overload it may wait far past the stall limit.
    backend = SlowTextBackend(is_compute_bound=True, num_workers=2, slow_s=0.8)
    engine = make_engine(backend, stall_timeout_s=0.3, step_budget_s=0.001)
    assert engine.is_pipelined
    engine.start()
    _, job = submit(engine, "slow job", "job", background=True)
    wait_final([job], timeout_s=10)
    assert job.status == RequestStatus.FINISHED_STOPPED and engine.is_alive()
    _, live = submit(engine, "slow live", "live")  # the same step on a live lane is a stall
    wait_final([live], timeout_s=10)
    assert live.status == RequestStatus.FINISHED_ERROR and not engine.is_alive()
