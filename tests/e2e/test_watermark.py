"""The watermark over a real `chorus serve`: every route and format carries it, a streamed response equals the
one-shot one sample for sample, /v1/audio/verify finds it (after MP3) and names the tenant, and consent refuses
a recording chorus made."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from chorus.watermark.marking import tenant_payload
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.consent_flow import challenge, give_consent, record
from tests.voices.speech import SENTENCE, speak, wav_bytes

pytestmark = [pytest.mark.e2e]
TEXT = "Every clip this server makes carries its mark, whatever the route or the format it leaves in."
KEY = "6b" * 32


@pytest.fixture(scope="module")
def marked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("watermark")
    server = start_server(root, {"data_dir": str(root / "data"), "safety": {"watermark_key": KEY}})
    yield server
    stop_server(server)


def verify(server: Server, data: bytes, name: str = "clip.mp3") -> dict[str, object]:
    files = {"audio": (name, data, "application/octet-stream")}
    response = httpx.post(f"{server.url}/v1/audio/verify", files=files, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def speech(server: Server, **extra: object) -> httpx.Response:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7, **extra}
    response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_every_format_is_marked_and_verify_names_the_tenant(marked_server: Server) -> None:
    for fmt in ("mp3", "opus", "aac", "flac", "wav"):
        found = verify(marked_server, speech(marked_server, response_format=fmt).content, f"clip.{fmt}")
        assert found["watermarked"] is True, (fmt, found)
        assert float(str(found["score"])) > float(str(found["threshold"]))
        assert found["payload"] == tenant_payload("default") and found["tenant_match"] is True
    sse = httpx.post(
        f"{marked_server.url}/v1/tts/generate",
        json={"text": TEXT, "voice": "alloy", "response_format": "wav"},
        timeout=60,
    )
    assert sse.status_code == 200
    chunks = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    audio = b"".join(base64.b64decode(c["audio"]) for c in chunks if c.get("audio"))
    assert verify(marked_server, audio, "vtts.wav")["watermarked"] is True


def test_a_streamed_response_is_the_one_shot_response(marked_server: Server) -> None:
    """The same seeded request as raw PCM (chunked), as SSE deltas, and again: identical samples, all marked."""
    raw = speech(marked_server, response_format="pcm").content
    events = speech(marked_server, response_format="pcm", stream_format="sse").text
    deltas = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ")]
    streamed = b"".join(base64.b64decode(d["audio"]) for d in deltas if d["type"] == "speech.audio.delta")
    assert streamed == raw and len(raw) > 48_000
    samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    assert verify(marked_server, wav_bytes(samples, 24_000), "clip.wav")["watermarked"] is True


def test_audio_chorus_did_not_make_is_not_marked(marked_server: Server, tmp_path: Path) -> None:
    audio, rate = speak(f"{SENTENCE} {SENTENCE}")
    found = verify(marked_server, wav_bytes(audio, rate), "espeak.wav")
    assert found["watermarked"] is False and found["payload"] is None and found["tenant_match"] is None
    # The same words from a server with another key: marked, but not with this server's key.
    other = start_server(tmp_path, {"data_dir": str(tmp_path / "data")})
    try:
        theirs = speech(other, response_format="mp3").content
        assert verify(other, theirs)["watermarked"] is True
    finally:
        stop_server(other)
    assert verify(marked_server, theirs)["watermarked"] is False
    bad = httpx.post(f"{marked_server.url}/v1/audio/verify", files={"audio": ("x.mp3", b"nope" * 100)}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "not_audio"


def test_consent_refuses_a_recording_chorus_made(marked_server: Server) -> None:
    issued = challenge(marked_server.url)
    made = speech(marked_server, input=str(issued["phrase"]), response_format="wav").content
    refused = record(marked_server.url, issued["id"], made)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "synthetic_speech"
    # A person reading it (flite's slt) is accepted.
    assert give_consent(marked_server.url).startswith("cons_")
