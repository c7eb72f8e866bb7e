"""The OpenAPI document says what the routes return: media types, and the one error body (tests/e2e/test_schema.py
checks the answers against it; these pin what that run may not reach, such as a job item's audio)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chorus.audio.encode import MEDIA_TYPES
from chorus.config import Settings
from chorus.server.app import create_app


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir: Path = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(data_dir=data_dir)).openapi()  # no lifespan: nothing loads


def content_of(spec: dict[str, Any], method: str, path: str, status: str) -> set[str]:
    return set(spec["paths"][path][method]["responses"][status].get("content", {}))


def test_audio_and_sse_routes_declare_their_media_types(spec: dict[str, Any]) -> None:
    audio = set(MEDIA_TYPES.values())
    assert content_of(spec, "post", "/v1/audio/speech", "200") == audio | {"text/event-stream"}
    assert content_of(spec, "post", "/v1/tts/generate", "200") == {"text/event-stream"}
    assert content_of(spec, "get", "/v1/jobs/{job_id}/items/{n}/audio", "200") == audio


def test_every_authenticated_route_documents_the_error_body_and_never_422(spec: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # validation errors are 400s with the error body
            if path in ("/health", "/ready"):
                continue  # open probes: no key, no input
            for status in ("4XX", "5XX"):
                assert responses[status]["content"]["application/json"]["schema"] == error, (method, path, status)
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"type", "message", "param"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
