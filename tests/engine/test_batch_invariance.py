"""The invariant: a request's audio is the same alone and in a batch with others joining and leaving.

Real Piper voice. Its noise is drawn per request from the request's seed (chorus.models.piper_noise), so a
seeded request with the voice's default noise is as reproducible as one with both noise scales at 0.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from chorus.engine.request import RequestStatus
from chorus.models.base import SynthesisParams
from chorus.models.piper import PiperBackend
from tests.engine.helpers import make_engine, run_until_idle, submit

QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
SEEDED = SynthesisParams(seed=20261201)  # the voice's own noise scales (0.667, 0.8)
MAIN = (
    "The committee met on Thursday to review the budget, and after a long debate it approved the plan. "
    "Construction will begin in March. Residents are invited to a public meeting next week."
)
OTHERS = [
    "Short note.",
    "A medium length sentence joins the batch while the first request is still speaking.",
    "Another voice of text arrives later, then leaves early because its client goes away, "
    "which must not disturb anyone else.",
    "Last one in.",
]


def _alone(piper: PiperBackend, params: SynthesisParams = QUIET, **config: object) -> np.ndarray:
    engine = make_engine(piper, **config)
    _, sink = submit(engine, MAIN, "main", params=params)
    run_until_idle(engine)
    assert sink.status == RequestStatus.FINISHED_STOPPED
    return sink.audio()


@pytest.mark.parametrize("params", [QUIET, SEEDED], ids=["noise-0", "seeded-noise"])
@pytest.mark.parametrize("budget_s", [0.02, None], ids=["cpu-budget", "every-slot"])
def test_audio_is_identical_alone_and_with_others_joining_and_leaving(
    piper: PiperBackend, budget_s: float | None, params: SynthesisParams
) -> None:
    alone = _alone(piper, params, step_budget_s=budget_s)
    engine = make_engine(piper, step_budget_s=budget_s)
    _, main = submit(engine, MAIN, "main", params=params)
    _, first = submit(engine, OTHERS[0], "o0", params=QUIET)
    for step in range(40):
        if step == 2:
            submit(engine, OTHERS[1], "o1", params=QUIET)
        if step == 3:
            submit(engine, OTHERS[2], "o2", params=QUIET)
        if step == 6:
            engine.abort("o2")  # leaves mid-generation
        if step == 8:
            submit(engine, OTHERS[3], "o3")  # unseeded noise: its audio differs every run, the others' must not
        engine.step()
    run_until_idle(engine)
    assert main.status == RequestStatus.FINISHED_STOPPED
    assert first.status == RequestStatus.FINISHED_STOPPED
    assert main.audio().size == alone.size
    np.testing.assert_array_equal(main.audio(), alone)


def test_static_batch_gives_the_same_audio(piper: PiperBackend) -> None:
    alone = _alone(piper)
    engine = make_engine(piper, mode="static")
    _, main = submit(engine, MAIN, "main", params=QUIET)
    for i, text in enumerate(OTHERS):
        submit(engine, text, f"o{i}", params=QUIET)
    run_until_idle(engine)
    np.testing.assert_array_equal(main.audio(), alone)


def test_pipelined_engine_gives_the_same_audio(piper: PiperBackend) -> None:
    """The engine thread with worker lanes (the CPU server's mode): concurrent requests, one aborted."""
    alone = _alone(piper)
    engine = make_engine(piper, step_budget_s=0.02)
    assert engine.is_pipelined
    engine.start()
    try:
        _, main = submit(engine, MAIN, "main", params=QUIET)
        sinks = [submit(engine, text, f"o{i}", params=QUIET)[1] for i, text in enumerate(OTHERS)]
        engine.abort("o2")
        deadline = time.monotonic() + 60
        while (main.final is None or any(s.final is None for s in sinks)) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.shutdown(close_backend=False)  # the session's shared backend stays usable for later tests
    assert main.status == RequestStatus.FINISHED_STOPPED
    np.testing.assert_array_equal(main.audio(), alone)
    assert sinks[2].status in (RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_STOPPED)


def test_a_seed_fixes_noisy_audio_and_another_seed_changes_it(piper: PiperBackend) -> None:
    first = _alone(piper, SEEDED)
    again = _alone(piper, SEEDED)
    other = _alone(piper, SynthesisParams(seed=7))
    unseeded = [_alone(piper, SynthesisParams()) for _ in range(2)]
    quiet = _alone(piper, QUIET)
    np.testing.assert_array_equal(first, again)
    assert first.size != other.size or not np.array_equal(first, other)
    assert unseeded[0].size != unseeded[1].size or not np.array_equal(*unseeded)  # a fresh seed per request
    assert first.size != quiet.size or not np.array_equal(first, quiet)  # the seed's noise is really used
