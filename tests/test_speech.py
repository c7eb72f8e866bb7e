"""The one request intake (chorus.speech): the same checks and the same audio whichever door a request uses."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from chorus.audio.resample import hold_back_s
from chorus.errors import InvalidRequestError, QueueFullError
from chorus.speech import SpeechLimits, SpeechOrder
from tests.engine.helpers import make_engine, speech_service
from tests.fakes import FakeBackend, expected_audio

TEXT = "one two three four five"


def test_a_thread_and_the_event_loop_get_the_same_audio() -> None:
    client, speech = speech_service(make_engine(FakeBackend()))
    client.start()
    try:
        threaded = np.concatenate([out.audio for out in speech.stream(SpeechOrder(TEXT))])

        async def from_the_loop() -> np.ndarray:
            stream = await speech.open(SpeechOrder(TEXT))
            return np.concatenate([out.audio async for out in stream])

        looped = asyncio.run(asyncio.wait_for(from_the_loop(), timeout=10))
    finally:
        client.close()
    np.testing.assert_array_equal(threaded, expected_audio(TEXT))
    np.testing.assert_array_equal(looped, expected_audio(TEXT))


@pytest.mark.parametrize(
    ("text", "message"), [("x" * 41, "text is 41 characters; the limit is 40"), ("  \n", "text is blank")]
)
def test_text_limits_name_the_callers_parameter(text: str, message: str) -> None:
    _, speech = speech_service(make_engine(FakeBackend()), max_input_chars=40)
    with pytest.raises(InvalidRequestError, match=message) as e:
        next(speech.stream(SpeechOrder(text, text_param="text")))
    assert e.value.param == "text"
    with pytest.raises(InvalidRequestError, match=message):
        asyncio.run(speech.open(SpeechOrder(text, text_param="text")))


def test_an_unknown_voice_is_the_clients_error() -> None:
    _, speech = speech_service(make_engine(FakeBackend()))
    with pytest.raises(InvalidRequestError, match="unknown voice 'nobody'") as e:
        next(speech.stream(SpeechOrder(TEXT, voice="nobody")))
    assert e.value.param == "voice"


def test_a_full_queue_refuses_before_any_work() -> None:
    backend = FakeBackend()
    client, speech = speech_service(make_engine(backend, queue_limit=1))  # not started: the first one waits
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="first")))
    assert client.status("first") is not None and client.status("first").status == "waiting"  # type: ignore[union-attr]
    with pytest.raises(QueueFullError) as e:
        # An unknown voice, yet 429: the queue is asked before the voice is looked up or the text prepared.
        next(speech.stream(SpeechOrder(TEXT, voice="nobody", request_id="second")))
    assert e.value.retry_after_s is not None and e.value.retry_after_s >= 1
    assert client.status("second") is None


def test_stopping_a_threaded_stream_early_frees_its_slot() -> None:
    backend = FakeBackend(step_delay_s=0.005)
    client, speech = speech_service(make_engine(backend))
    client.start()
    try:
        outputs = speech.stream(SpeechOrder(TEXT * 20, request_id="early"))
        next(outputs)
        outputs.close()  # what a caller's break does
        for _ in range(200):
            if "early" in backend.released:
                break
            asyncio.run(asyncio.sleep(0.01))
        assert "early" in backend.released
    finally:
        client.close()


def test_a_keys_limit_holds_for_requests_that_arrive_together() -> None:
    # Both pass their checks before either is queued (the first waits for its text preparation off the loop):
    # the limit must still let only one through, and a refused or finished request frees its place.
    client, speech = speech_service(make_engine(FakeBackend()))
    order = SpeechOrder(TEXT, key_id="key_a", max_concurrency=1)

    async def together() -> list[object]:
        return await asyncio.gather(speech.open(order), speech.open(order), return_exceptions=True)

    first, second = asyncio.run(together())
    assert isinstance(second, QueueFullError) and second.code == "key_concurrency_limit"
    assert not isinstance(first, BaseException)
    client.start()  # the first one runs to its end (nobody listens) and frees the key's place
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                audio = np.concatenate([out.audio for out in speech.stream(order)])
                break
            except QueueFullError:
                if time.monotonic() > deadline:
                    pytest.fail("a finished request did not free its key's place")
                time.sleep(0.01)
    finally:
        client.close()
    np.testing.assert_array_equal(audio, expected_audio(TEXT))


def test_a_request_resampled_for_its_client_is_due_earlier_by_what_the_resampler_holds() -> None:
    client, speech = speech_service(make_engine(FakeBackend(sample_rate=22050)))  # not started: requests wait
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="engine-rate")))
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="resampled", sample_rate=24000)))
    held = {rid: client.engine._by_id[rid].hold_back_s for rid in ("engine-rate", "resampled")}
    assert held == {"engine-rate": 0.0, "resampled": hold_back_s(22050, 24000)}
    assert held["resampled"] > 0.01


def test_the_servers_time_limit_is_for_callers_not_for_background_orders() -> None:
    client, speech = speech_service(make_engine(FakeBackend()))  # not started: requests wait
    speech.limits = SpeechLimits(max_input_chars=100_000, request_timeout_s=30.0)
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="live")))
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="job-item", background=True)))
    asyncio.run(speech.open(SpeechOrder(TEXT, request_id="job-own-limit", background=True, timeout_s=5.0)))
    requests = {rid: client.engine._by_id[rid] for rid in ("live", "job-item", "job-own-limit")}
    assert {rid: r.timeout_s for rid, r in requests.items()} == {"live": 30.0, "job-item": None, "job-own-limit": 5.0}
    assert [r.background for r in requests.values()] == [False, True, True]
