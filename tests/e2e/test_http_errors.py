"""Every bad input gets a 4xx with a JSON error body naming the problem; never a traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
GOOD = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}


def check_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    return dict(error)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "   "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"input": 42}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"voice": {"id": ""}}, "voice.id"),
        ({"voice": None}, "voice"),
        ({"model": "gpt-9"}, "model"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"stream_format": "video"}, "stream_format"),
        ({"priority": 1000}, "priority"),
        ({"timeout": -1}, "timeout"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_speech_requests(server: Server, change: dict[str, object], param: str) -> None:
    body = {**GOOD, **change}
    check_error(httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=30), 400, param)


@pytest.mark.parametrize("missing", ["model", "input", "voice"])
def test_missing_fields(server: Server, missing: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != missing}
    check_error(httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=30), 400, missing)


def test_malformed_json(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    check_error(response, 400)


def test_bad_request_id_header(server: Server) -> None:
    response = httpx.post(f"{server.url}/v1/audio/speech", json=GOOD, headers={"x-request-id": "a b/c"}, timeout=30)
    check_error(response, 400, "X-Request-Id")


def test_unknown_route_and_method(server: Server) -> None:
    check_error(httpx.get(f"{server.url}/v1/nothing-here", timeout=30), 404)
    check_error(httpx.get(f"{server.url}/v1/audio/speech", timeout=30), 405)
    check_error(httpx.get(f"{server.url}/v1/requests/unknown-id", timeout=30), 404, "request_id")


@pytest.mark.parametrize(
    ("body", "param"),
    [({"text": ""}, "text"), ({"text": "hi", "voice": "nobody"}, "voice"), ({"text": "hi", "speed": 0}, "speed")],
)
def test_bad_generate_requests(server: Server, body: dict[str, object], param: str) -> None:
    check_error(httpx.post(f"{server.url}/v1/tts/generate", json=body, timeout=30), 400, param)
