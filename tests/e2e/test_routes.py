"""vTTS-compatible and operational routes."""

from __future__ import annotations

import base64
import json
import os

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def sse_events(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


def test_generate_streams_sse_audio(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/tts/generate", json={"text": "Hello there. This is the vTTS route."}, timeout=60
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("audio") >= 2
    audio_events = [data for kind, data in events if kind == "audio"]
    assert [e["index"] for e in audio_events] == list(range(len(audio_events)))
    pcm = np.frombuffer(b"".join(base64.b64decode(str(e["audio"])) for e in audio_events), "<i2")
    assert audio_events[0]["sample_rate"] == 24_000
    assert abs(pcm.size / 24_000 - float(events[-1][1]["audio_seconds"])) < 0.1  # type: ignore[arg-type]


def test_voices_stats_health_ready_models(server: Server) -> None:
    voices = httpx.get(f"{server.url}/v1/voices", timeout=10).json()["voices"]
    assert voices[0]["id"] == "joe"
    stats = server.stats()
    for key in ("active_slots", "waiting", "steps_per_s", "audio_s_per_s", "ttfa_s", "max_slots"):
        assert key in stats
    health = httpx.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200


def test_stats_count_finished_requests_and_ttfa(server: Server) -> None:
    before = server.stats()["ttfa_s"]["count"]  # type: ignore[index]
    httpx.post(
        f"{server.url}/v1/audio/speech", json={"model": "tts-1", "input": "Count me.", "voice": "joe"}, timeout=60
    )
    after = server.stats()
    assert after["ttfa_s"]["count"] == before + 1  # type: ignore[index]
    assert after["ttfa_s"]["p50"] is not None  # type: ignore[index]
    # Admission control learned from the request's steps: CPU estimates vs measured, share of a core.
    admission = after["admission"]
    assert isinstance(admission, dict) and 0 < admission["capacity_cores"] <= (os.cpu_count() or 1)
    assert admission["margin"] >= 1.0 and 0 < admission["speed"] <= 1.0
    assert admission["other_processes_cores"] >= 0 and admission["overhead_cpu_per_audio_s"] >= 0
    assert admission["stolen_cores"] >= 0


def test_the_database_is_migrated_at_start_up(server: Server) -> None:
    import sqlite3

    db = server.log_path.parent / "data" / "chorus.db"
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        tenants = [row[0] for row in conn.execute("select id from tenants")]
    assert {"tenants", "voices", "alembic_version"} <= tables
    assert tenants == ["default"]


def test_a_seeded_piper_request_is_reproducible_over_http(server: Server) -> None:
    """``seed`` fixes Piper's noise (default noise scales): the same seed twice gives the same bytes."""

    def speak(seed: int | None) -> bytes:
        body: dict[str, object] = {"model": "tts-1", "voice": "alloy", "input": "Seeds make noise repeatable."}
        if seed is not None:
            body["seed"] = seed
        response = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "response_format": "pcm"}, timeout=60)
        assert response.status_code == 200, response.text
        return response.content

    first, again, other = speak(11), speak(11), speak(12)
    assert first == again
    assert first != other
