"""An engine failure reaches every HTTP caller as a typed 503 instead of a hang (real uvicorn, in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from chorus.config import Settings
from chorus.server.app import create_app
from tests.e2e.conftest import free_port
from tests.fakes import FakeBackend


@pytest.fixture()
def failing_server(tmp_path: Path) -> Iterator[tuple[str, FakeBackend]]:
    # A server marks every output, and the watermark needs a real audio rate (the fake's default is 1 kHz).
    backend = FakeBackend(fail_on_step=3, step_delay_s=0.05, default_max_slots=1, sample_rate=16_000)
    port = free_port()
    app = create_app(Settings(data_dir=tmp_path), backend=backend)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url, backend
    server.should_exit = True
    thread.join(timeout=20)


def test_every_waiting_request_gets_a_503_and_health_says_so(failing_server: tuple[str, FakeBackend]) -> None:
    url, backend = failing_server
    body = {"model": "tts-1", "voice": "alloy", "input": "one two three four five six seven eight"}

    def post(i: int) -> httpx.Response:
        return httpx.post(f"{url}/v1/audio/speech", json={**body, "input": f"{body['input']} {i}"}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, 0)
        deadline = time.monotonic() + 10
        while not backend.steps and time.monotonic() < deadline:  # the first holds the only slot...
            time.sleep(0.005)
        rest = list(pool.map(post, range(1, 4)))  # ...and the others wait behind it
    # The first had started streaming when the engine died: its stream is cut short.
    assert first.result().status_code == 200, first.result().text
    for response in rest:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "engine_error"
    assert httpx.get(f"{url}/health", timeout=10).status_code == 503
    assert httpx.get(f"{url}/ready", timeout=10).status_code == 503
    late = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=10)
    assert late.status_code == 503
