"""The pipelined loop (CPU backends with several workers) on the fake backend, through the engine thread."""

from __future__ import annotations

import time

import numpy as np

from chorus.engine.request import RequestStatus
from chorus.errors import EngineDeadError
from tests.engine.helpers import make_engine, submit, wait_final
from tests.fakes import FakeBackend, expected_audio

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
