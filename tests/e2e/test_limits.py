"""Admission limits over real HTTP: 429 when the queue is full, queue position, timeout, disconnects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LONG_TEXT, Server, start_server, stop_server

pytestmark = pytest.mark.e2e


def speech(text: str, **extra: object) -> dict[str, object]:
    return {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm", **extra}


# ~4000 characters, four minutes of speech: several seconds of compute even for a fast engine, so a test's
# disconnect always lands while the request still runs.
BUSY_TEXT = f"{LONG_TEXT} {LONG_TEXT}"[:4000].rsplit(" ", 1)[0]


@contextlib.contextmanager
def busy_stream(url: str, request_id: str | None = None) -> Iterator[httpx.Response]:
    """A long streaming request that holds a slot while the test does not read it; closing it is a disconnect."""
    headers = {"x-request-id": request_id} if request_id else {}
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{url}/v1/audio/speech", json=speech(BUSY_TEXT), headers=headers) as response,
    ):
        assert response.status_code == 200
        yield response


def wait_for(predicate, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_queue_full_gives_429_with_retry_after_and_queue_position(one_slot_server: Server) -> None:
    url = one_slot_server.url
    results: dict[str, int] = {}
    with busy_stream(url):  # holds the only slot while we do not read
        waiter = threading.Thread(
            target=lambda: results.update(
                waiting=httpx.post(
                    f"{url}/v1/audio/speech",
                    json=speech("Waiting my turn."),
                    headers={"x-request-id": "queued-1"},
                    timeout=120,
                ).status_code
            )
        )
        waiter.start()
        assert wait_for(lambda: one_slot_server.stats()["waiting"] == 1)
        status = httpx.get(f"{url}/v1/requests/queued-1", timeout=10).json()
        assert status["status"] == "waiting" and status["queue_position"] == 0 and status["eta_s"] > 0
        refused = httpx.post(f"{url}/v1/audio/speech", json=speech("No room."), timeout=30)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 503  # full queue: not ready for more
    # Closing the busy stream (a disconnect) frees the slot for the waiting request.
    waiter.join(timeout=60)
    assert results.get("waiting") == 200


def test_a_request_predicted_to_wait_past_its_timeout_gets_429_at_once(one_slot_server: Server) -> None:
    url = one_slot_server.url
    with busy_stream(url):  # seconds of compute ahead of anyone else
        t0 = time.monotonic()
        late = httpx.post(f"{url}/v1/audio/speech", json=speech("Too slow.", timeout=0.5), timeout=30)
        assert late.status_code == 429, late.text
        assert late.json()["error"]["type"] == "rate_limit_error"
        assert "over this request's limit of 0.5 s" in late.json()["error"]["message"]
        assert int(late.headers["retry-after"]) >= 1
        assert time.monotonic() - t0 < 1.0  # at once, not after waiting to fail


def test_without_admission_control_a_request_that_waits_past_its_timeout_gets_504(tmp_path: Path) -> None:
    """worker.max_load 0 turns admission control (and its predictions) off: only max_slots holds a request back,
    and a request still waiting when its timeout expires gets 504."""
    srv = start_server(tmp_path, {"worker": {"max_slots": 1, "max_load": 0}})
    try:
        with busy_stream(srv.url):
            t0 = time.monotonic()
            late = httpx.post(f"{srv.url}/v1/audio/speech", json=speech("Too slow.", timeout=0.5), timeout=30)
            assert late.status_code == 504
            assert late.json()["error"]["type"] == "timeout_error"
            assert time.monotonic() - t0 < 5
    finally:
        stop_server(srv)


def test_disconnect_mid_stream_frees_the_slot(server: Server) -> None:
    def aborted() -> int:
        return int(server.stats()["requests_finished"].get("finished_aborted", 0))  # type: ignore[union-attr]

    def status() -> httpx.Response:
        return httpx.get(f"{server.url}/v1/requests/mid-stream", timeout=10)

    before = aborted()
    with busy_stream(server.url, request_id="mid-stream") as r:
        chunks = r.iter_raw()  # kept: a dropped iterator closes the stream (a disconnect)
        next(chunks)  # audio is flowing: the request holds a slot
        assert status().json()["status"] == "running"
    hung_up = time.monotonic()
    # The client hung up long before the end of the text (seconds of compute away): the request goes at once.
    assert wait_for(lambda: status().status_code == 404, timeout_s=10)
    assert time.monotonic() - hung_up < 3.0
    assert wait_for(lambda: aborted() >= before + 1, timeout_s=5)


def test_disconnect_while_queued_frees_the_place(one_slot_server: Server) -> None:
    url = one_slot_server.url
    with busy_stream(url):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/audio/speech", json=speech("I give up."), timeout=1.0)
        assert wait_for(lambda: one_slot_server.stats()["waiting"] == 0, timeout_s=5)
