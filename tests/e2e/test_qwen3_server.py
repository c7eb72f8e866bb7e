"""A real `chorus serve` on tiny random Qwen3-TTS models saved to a temp folder (CustomVoice and Base cloning)."""

from __future__ import annotations

import base64
import json
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")
pytest.importorskip("transformers", reason="the qwen extra is not installed (scripts/install_qwen.sh)")

from chorus.testing.qwen3_tiny import build_tiny_model
from tests.e2e.conftest import Server, start_server, stop_server
from tests.models.qwen3.conftest import reference_audio
from tests.voices.speech import SENTENCE, speak, wav_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def custom_voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("qwen3-cv-server")
    model = build_tiny_model(root / "model", kind="custom_voice", seed=0)
    # max_emit_frames = emit_every_frames: chunks stop growing (the setting travels config → registry → backend).
    worker = {"max_frames": 30, "max_slots": 4, "emit_every_frames": 6, "max_emit_frames": 6}
    config = {"model": {"name": "qwen3", "local_path": str(model)}, "worker": worker}
    server = start_server(root, config)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("qwen3-base-server")
    model = build_tiny_model(root / "model", kind="base", seed=1)
    # The reference arrives as an 8 kHz file: the server decodes and resamples it to 24 kHz itself.
    ref = write_wav(root / "ref.wav", reference_audio(seconds=3.0)[::3][: 16_000 * 3], 8_000)
    voices = [{"id": "narrator", "ref_audio": str(ref), "ref_text": "This is the narrator speaking clearly."}]
    config = {"model": {"name": "qwen3", "local_path": str(model), "voices": voices}, "worker": {"max_frames": 30}}
    server = start_server(root, config)
    yield server
    stop_server(server)


def speech(server: Server, **body: object) -> httpx.Response:
    payload = {"model": "qwen3", "input": "Hello there, from a tiny model.", "response_format": "pcm", **body}
    return httpx.post(f"{server.url}/v1/audio/speech", json=payload, timeout=120)


def test_custom_voice_speakers_models_and_speech(custom_voice_server: Server) -> None:
    voices = {v["id"] for v in httpx.get(f"{custom_voice_server.url}/v1/voices", timeout=10).json()["voices"]}
    assert {"aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian"} <= voices
    models = httpx.get(f"{custom_voice_server.url}/v1/models", timeout=10).json()["data"]
    assert models[0]["id"] == "qwen3" and models[0]["sample_rate"] == 24_000
    response = speech(custom_voice_server, voice="vivian")
    assert response.status_code == 200, response.text
    audio = np.frombuffer(response.content, "<i2")
    assert audio.size == 30 * 1920  # max_frames frames of 80 ms at 24 kHz: the random model never says EOS
    assert np.abs(audio).max() > 100
    assert speech(custom_voice_server, voice="nobody").status_code == 400


def test_custom_voice_sse_routes_stream_chunks(custom_voice_server: Server) -> None:
    response = httpx.post(
        f"{custom_voice_server.url}/v1/tts/generate", json={"text": "Streaming chunks.", "voice": "ryan"}, timeout=120
    )
    events = [block for block in response.text.strip().split("\n\n")]
    audio_events = [json.loads(b.split("data: ", 1)[1]) for b in events if b.startswith("event: audio")]
    sizes = [len(base64.b64decode(e["audio"])) // 2 for e in audio_events]
    assert sum(sizes) == 30 * 1920
    # The first chunk early (3 frames), then 6 frames each: max_emit_frames stops the growth to 12 and 24. The
    # watermark finishes each sample one 20 ms hop (480 samples) later: every chunk gives its last hop to the
    # next, and the last hop leaves at the end.
    hop = 480
    assert sizes == [3 * 1920 - hop, *[6 * 1920] * 4, 3 * 1920, hop], sizes
    with httpx.stream(
        "POST",
        f"{custom_voice_server.url}/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Sse please.",
            "voice": "ryan",
            "response_format": "pcm",
            "stream_format": "sse",
        },
        timeout=120,
    ) as r:
        deltas = [line for line in r.iter_lines() if "speech.audio.delta" in line]
    assert len(deltas) >= 3


def test_cloned_voice_from_a_reference_wav(base_server: Server) -> None:
    voices = [v["id"] for v in httpx.get(f"{base_server.url}/v1/voices", timeout=10).json()["voices"]]
    assert voices == ["narrator"]
    response = speech(base_server, voice="narrator", language="english")
    assert response.status_code == 200, response.text
    audio = np.frombuffer(response.content, "<i2")
    assert audio.size == 30 * 1920 and np.abs(audio).max() > 100


def test_seeded_sampling_over_http_is_reproducible(custom_voice_server: Server) -> None:
    a = speech(custom_voice_server, voice="ryan", seed=7, temperature=0.8, top_k=30)
    b = speech(custom_voice_server, voice="ryan", seed=7, temperature=0.8, top_k=30)
    c = speech(custom_voice_server, voice="ryan", seed=8, temperature=0.8, top_k=30)
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.content == b.content
    assert a.content != c.content
    assert speech(custom_voice_server, voice="ryan", temperature=5).status_code == 400


def test_voice_registered_over_http_speaks_the_same_after_a_restart(tmp_path: Path) -> None:
    """Base cloning through the voice API: prompt features computed at registration, stored, loaded back."""
    model = build_tiny_model(tmp_path / "model", kind="base", seed=1)
    config = {"model": {"name": "qwen3", "local_path": str(model)}, "worker": {"max_frames": 30}}
    config["data_dir"] = str(tmp_path / "data")
    config["safety"] = {"require_consent": False}  # cloning itself is tested here; consent in test_consent.py
    audio, rate = speak(SENTENCE)
    server = start_server(tmp_path, config)
    try:
        files = {"audio_sample": ("ref.wav", wav_bytes(audio, rate), "audio/wav")}
        created = httpx.post(
            f"{server.url}/v1/audio/voices", data={"name": "Quinn", "ref_text": SENTENCE}, files=files, timeout=120
        )
        assert created.status_code == 201, created.text
        first = speech(server, voice="Quinn", language="english", seed=3)
        assert first.status_code == 200, first.text
        assert server.stats()["voice_work"] == {"embedded": 1, "built": 1}
    finally:
        stop_server(server)
    server = start_server(tmp_path, config)
    try:
        again = speech(server, voice=created.json()["id"], language="english", seed=3)
        assert again.status_code == 200 and again.content == first.content
        assert server.stats()["voice_work"] == {"loaded": 1}
    finally:
        stop_server(server)


def test_custom_voice_checkpoint_refuses_registration(custom_voice_server: Server) -> None:
    audio, rate = speak(SENTENCE)
    files = {"audio_sample": ("ref.wav", wav_bytes(audio, rate), "audio/wav")}
    response = httpx.post(f"{custom_voice_server.url}/v1/audio/voices", data={"name": "x"}, files=files, timeout=60)
    assert response.status_code == 501 and "Base checkpoint" in response.json()["error"]["message"]
    assert [
        v for v in httpx.get(f"{custom_voice_server.url}/v1/audio/voices").json()["data"] if v["type"] == "cloned"
    ] == []
