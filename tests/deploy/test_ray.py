"""chorus on Ray Serve (chorus.deploy.ray_app): a local Ray on loopback, the bundled voice, two engine replicas,
real HTTP and WebSocket through Ray's proxy."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time
import wave
from collections.abc import Iterator

import httpx
import pytest

from chorus.client import SessionEvent, SpeechSession
from tests.e2e.conftest import free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.slow]

READY_TIMEOUT_S = 90
# Ray reaches for cloud metadata and DNS even with usage stats off: a dead proxy keeps it on loopback.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost,::1",
}
TEXT = "Hello from a replica of chorus on Ray Serve."


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from chorus.deploy.ray_app import RayScaling, build_app

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay under 108 bytes
    data_dir = tmp_path_factory.mktemp("ray-data")
    port = free_port()
    config = {
        "data_dir": str(data_dir),
        "model": {"num_workers": 1},
        "worker": {"max_slots": 4},
        "server": {"canary_interval_s": 0},
        "jobs": {"enabled": False},
        "safety": {"require_consent": False},
        "log": {"format": "text"},
    }
    scaling = RayScaling(min_replicas=2, max_replicas=2, num_cpus=0.5, ingress_cpus=0.25, max_voices=4)
    try:
        ray.init(
            num_cpus=2,
            object_store_memory=80 * 2**20,
            _temp_dir=temp_dir,
            include_dashboard=False,
            log_to_driver=False,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config, scaling), name="chorus", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/ready", timeout=5)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(0.25)
    raise RuntimeError(f"chorus on Ray not ready in {READY_TIMEOUT_S} s: {last}")


def speech(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "input": TEXT, **body}, timeout=60)


def test_openai_route_streams_a_wav(ray_url: str) -> None:
    r = speech(ray_url, voice="alloy", response_format="wav")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-request-id"]
    assert r.headers["x-chorus-replica"]
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24_000)
        # A streamed WAV's header cannot know its length: the frames are whatever follows it.
        seconds = len(w.readframes(w.getnframes())) / 2 / w.getframerate()
    assert 1.0 < seconds < 8.0, seconds


def test_errors_are_chorus_json(ray_url: str) -> None:
    r = speech(ray_url, voice="no-such-voice")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "voice"
    assert "no-such-voice" in error["message"]
    health = httpx.get(f"{ray_url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["engine_alive"] is True


def test_websocket_session_speaks(ray_url: str) -> None:
    async def session() -> list[SessionEvent]:
        async with SpeechSession.connect(ray_url, voice="joe", response_format="pcm") as tts:
            for i in range(0, len(TEXT), 4):
                await tts.append(TEXT[i : i + 4])
            await tts.flush()
            events = []
            async for event in tts.events():
                events.append(event)
                if event.type in ("response.audio.done", "error"):
                    break
            return events

    events = asyncio.run(asyncio.wait_for(session(), 60))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.audio.done", [e.data for e in events if e.type != "audio"]
    assert events[-1].data["status"] == "completed", events[-1].data
    audio = b"".join(e.audio for e in events if e.type == "audio")
    seconds = len(audio) / 2 / 24_000
    assert 1.0 < seconds < 8.0, seconds


def test_a_cloned_voice_stays_on_a_replica_holding_it(ray_url: str) -> None:
    from tests.voices.speech import ESPEAK, SENTENCE, SKIP_REASON, speak, wav_bytes

    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    audio, rate = speak(SENTENCE, "en-us+f3")
    files = {"audio_sample": ("ref.wav", wav_bytes(audio, rate), "audio/wav")}
    form = {"name": "narrator", "ref_text": SENTENCE}
    r = httpx.post(f"{ray_url}/v1/audio/voices", data=form, files=files, timeout=60)
    assert r.status_code == 201, r.text
    voice_id = r.json()["id"]
    first = speech(ray_url, voice="narrator", response_format="pcm")
    assert first.status_code == 200, first.text
    replica = first.headers["x-chorus-replica"]
    time.sleep(0.5)  # the replica tells Ray's controller which voices it holds, then the routers learn it
    for voice in ("narrator", voice_id, "narrator", voice_id, "narrator"):  # by chance: 1 in 32
        again = speech(ray_url, voice=voice, response_format="pcm")
        assert again.status_code == 200, again.text
        assert again.headers["x-chorus-replica"] == replica
    # Built-in voices go to any replica: both serve.
    seen = {speech(ray_url, input="Hi.", response_format="pcm").headers["x-chorus-replica"] for _ in range(12)}
    assert len(seen) == 2, seen
