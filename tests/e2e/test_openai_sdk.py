"""The official openai SDK, unchanged, against a running chorus server."""

from __future__ import annotations

import base64
import io
import json
import time

import av
import numpy as np
import pytest
from openai import OpenAI

from chorus.audio.encode import RESPONSE_FORMATS
from tests.e2e.conftest import LONG_TEXT, Server

pytestmark = pytest.mark.e2e
TEXT = "Hello from chorus. This sentence is spoken by the bundled voice, streamed as it is made."


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767, 24_000
    with av.open(io.BytesIO(data)) as container:
        chunks = [f.to_ndarray().reshape(-1).astype(np.float32) for f in container.decode(audio=0)]
        return np.concatenate(chunks), container.streams.audio[0].rate


@pytest.mark.parametrize("fmt", RESPONSE_FORMATS)
def test_every_response_format(client: OpenAI, fmt: str) -> None:
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)  # type: ignore[arg-type]
    audio, rate = decode(response.content, fmt)
    assert 3.0 < audio.size / rate < 10.0
    assert np.abs(audio).max() > 0.05
    if fmt in ("pcm", "wav"):
        assert rate == 24_000


def test_plain_streaming_sends_audio_before_synthesis_ends(client: OpenAI) -> None:
    t0 = time.monotonic()
    arrivals = []
    data = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm"
    ) as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        for chunk in response.iter_bytes():
            arrivals.append(time.monotonic() - t0)
            data += chunk
    audio_seconds = len(data) / 2 / 24_000
    assert audio_seconds > 60
    assert len(arrivals) > 10
    assert arrivals[0] < arrivals[-1] / 5  # the first audio came long before the last


def test_sse_stream_format(client: OpenAI) -> None:
    deltas: list[bytes] = []
    done = None
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: ") :])
            if event["type"] == "speech.audio.delta":
                deltas.append(base64.b64decode(event["audio"]))
            elif event["type"] == "speech.audio.done":
                done = event
    assert len(deltas) > 1
    assert done is not None and done["usage"]["input_tokens"] == len(TEXT)
    audio = np.frombuffer(b"".join(deltas), "<i2")
    assert 3.0 < audio.size / 24_000 < 10.0


def test_sse_with_an_encoded_format_decodes(client: OpenAI) -> None:
    pieces = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="mp3", stream_format="sse"
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"speech.audio.delta"' in line:
                pieces.append(base64.b64decode(json.loads(line[6:])["audio"]))
    audio, rate = decode(b"".join(pieces), "mp3")
    assert 3.0 < audio.size / rate < 10.0


def test_voice_object_and_models_list(client: OpenAI) -> None:
    response = client.audio.speech.create(
        model="piper",
        voice={"id": "joe"},
        input="Object voice.",
        response_format="wav",  # type: ignore[arg-type]
    )
    assert response.content[:4] == b"RIFF"
    models = client.models.list()
    assert [m.id for m in models.data] == ["piper"]


def test_same_request_twice_gives_the_same_audio_when_noise_is_off(client: OpenAI) -> None:
    quiet = {"noise_scale": 0, "noise_w_scale": 0}
    a = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm", extra_body=quiet)
    b = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm", extra_body=quiet)
    assert a.content == b.content
