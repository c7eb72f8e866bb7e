"""Voice registration over real HTTP on `chorus serve` (Piper + conversion), on SQLite + files and on
PostgreSQL + S3: register, speak, restart, speak the same, delete; refusals store nothing; a server killed
mid-registration leaves no half voice and the retry works."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from chorus.store.voices import voice_prefix
from tests.e2e.conftest import Server, start_server, stop_server
from tests.store.fixtures import Backend, make_backend
from tests.voices.speech import (
    OTHER_SENTENCE,
    PARAGRAPH,
    SENTENCE,
    SHORT_SENTENCE,
    encode,
    silence,
    speak,
    wav_bytes,
)

pytestmark = [pytest.mark.e2e]

REF_TEXT = f"{SENTENCE} {OTHER_SENTENCE}"  # ~10 s
SPOKEN = "A cloned voice reads this sentence aloud."
DETERMINISTIC = {"noise_scale": 0.0, "noise_w_scale": 0.0}
STALLING_SERVER = [sys.executable, "-m", "tests.e2e.stalling_server"]  # run from the repository root, like pytest


@pytest.fixture(scope="module")
def reference() -> bytes:
    audio, rate = speak(REF_TEXT, "en-us+f3")
    return wav_bytes(audio, rate)


def register(
    url: str, name: str | None, data: bytes | None, ref_text: str | None = REF_TEXT, **fields: str
) -> httpx.Response:
    form = {k: v for k, v in {"name": name, "ref_text": ref_text, **fields}.items() if v is not None}
    files = {} if data is None else {"audio_sample": ("ref.wav", data, "audio/wav")}
    return httpx.post(f"{url}/v1/audio/voices", data=form, files=files, timeout=120)


def say(url: str, voice: str | None, text: str = SPOKEN) -> np.ndarray:
    body: dict[str, Any] = {"model": "tts-1", "input": text, "response_format": "pcm", **DETERMINISTIC}
    if voice is not None:
        body["voice"] = voice
    response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<i2")


def voice_ids(url: str) -> list[str]:
    return [v["id"] for v in httpx.get(f"{url}/v1/audio/voices", timeout=10).json()["data"] if v["type"] == "cloned"]


def voice_work(server: Server) -> dict[str, int]:
    work: dict[str, int] = server.stats()["voice_work"]  # type: ignore[assignment]
    return work


# These tests are about the voice lifecycle; consent has its own (tests/e2e/test_consent.py).
NO_CONSENT = {"require_consent": False}


def store_config(backend: Backend) -> dict[str, object]:
    return {"store": backend.config_args, "data_dir": str(backend.data_dir), "safety": NO_CONSENT}


def stored_blobs(backend: Backend, voice_id: str) -> list[str]:
    """Which of a voice's blobs exist in the store (local directory or S3), read directly."""
    sql, blobs = backend.open(migrate=False)
    try:
        kinds = ("conversion", "embedding", "original", "processed")
        return [k for k in kinds if blobs.exists(f"{voice_prefix('default', voice_id)}/{k}")]
    finally:
        sql.close()


@pytest.fixture(params=["sqlite+file", "postgres+s3"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(str(request.param), request, tmp_path / "data")


def test_register_restart_speak_delete(store_backend: Backend, reference: bytes, tmp_path: Path) -> None:
    server = start_server(tmp_path, store_config(store_backend))
    try:
        created = register(server.url, "Ada", reference)
        assert created.status_code == 201, created.text
        voice = created.json()
        assert voice["id"].startswith("voice_") and voice["name"] == "Ada" and voice["type"] == "cloned"
        assert voice["ref_text"] == REF_TEXT and voice["consent_status"] == "none"
        assert created.headers["location"] == f"/v1/audio/voices/{voice['id']}"
        listed = httpx.get(f"{server.url}/v1/audio/voices", timeout=10).json()["data"]
        assert [v["type"] for v in listed] == ["builtin", "cloned"]  # one namespace: built-in and cloned
        vtts = httpx.get(f"{server.url}/v1/voices", timeout=10).json()["voices"]
        assert voice["id"] in [v["id"] for v in vtts]

        by_id = say(server.url, voice["id"])
        assert np.array_equal(say(server.url, "ada"), by_id)  # by name, any case
        base = say(server.url, "alloy")
        assert len(by_id) == len(base) and not np.array_equal(by_id, base)  # converted, same timing
        assert voice_work(server) == {"embedded": 1, "built": 1}  # registration did the work; requests none
    finally:
        stop_server(server)

    server = start_server(tmp_path, store_config(store_backend))
    try:
        assert voice_ids(server.url) == [voice["id"]]
        got = httpx.get(f"{server.url}/v1/audio/voices/{voice['id']}", timeout=10).json()
        assert got == voice
        # The stored model, loaded once: the same audio as before the restart, nothing recomputed.
        assert np.array_equal(say(server.url, voice["id"]), by_id)
        assert np.array_equal(say(server.url, "Ada"), by_id)
        assert voice_work(server) == {"loaded": 1}

        assert stored_blobs(store_backend, voice["id"]) == ["conversion", "embedding", "original", "processed"]
        deleted = httpx.delete(f"{server.url}/v1/audio/voices/{voice['id']}", timeout=10)
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert voice_ids(server.url) == []
        missing = httpx.get(f"{server.url}/v1/audio/voices/{voice['id']}", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "voice_id"
        gone = httpx.post(
            f"{server.url}/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "Ada"}, timeout=10
        )
        assert gone.status_code == 400 and "unknown voice" in gone.json()["error"]["message"]
        assert httpx.delete(f"{server.url}/v1/audio/voices/{voice['id']}", timeout=10).status_code == 404
        assert stored_blobs(store_backend, voice["id"]) == []  # the audio went with the voice
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("voices-api")
    server = start_server(root, {"data_dir": str(root / "data"), "safety": NO_CONSENT})
    yield server, root / "data"
    stop_server(server)


BadUpload = tuple[dict[str, str], bytes | None, int, str | None, str]
BAD_CASES = [
    "too_short", "too_long", "mostly_silence", "clipped", "not_audio", "corrupt_mp3", "empty_file", "too_large",
    "no_name", "blank_name", "id_like_name", "builtin_name", "no_audio", "ref_text_too_long", "bad_language",
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_uploads() -> dict[str, BadUpload]:
    """case → (form fields, audio upload, status, error.code, error.param)."""
    speech, rate = speak(SENTENCE)
    short, _ = speak(SHORT_SENTENCE)
    long_audio = np.concatenate([speak(s)[0] for s in PARAGRAPH])
    # ~6.5 s of speech spread over ~19 s (see tests/voices/test_preprocess.py)
    sentences = ["Good morning to you.", "The weather is nice today.", "Please call Stella.", "I like tea."]
    gappy = np.concatenate([part for s in sentences for part in (speak(s)[0], silence(4.0, rate))])
    ok = {"name": "someone"}
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    return {
        "too_short": (ok, wav_bytes(short, rate), 400, "too_short", "audio_sample"),
        "too_long": (ok, wav_bytes(long_audio, rate), 400, "too_long", "audio_sample"),
        "mostly_silence": (ok, wav_bytes(gappy, rate), 400, "mostly_silence", "audio_sample"),
        "clipped": (ok, wav_bytes(np.clip(8.0 * speech, -1.0, 1.0), rate), 400, "clipped", "audio_sample"),
        "not_audio": (ok, b"this is a text file, not a recording\n" * 200, 400, "not_audio", "audio_sample"),
        "corrupt_mp3": (ok, encode(speech, rate, "mp3")[:400] + noise, 400, "not_audio", "audio_sample"),
        "empty_file": (ok, b"", 400, "not_audio", "audio_sample"),
        "too_large": (ok, b"\0" * (11 * 2**20), 413, "too_large", "audio_sample"),
        "no_name": ({}, wav_bytes(speech, rate), 400, None, "name"),
        "blank_name": ({"name": "   "}, wav_bytes(speech, rate), 400, None, "name"),
        "id_like_name": ({"name": "voice_123"}, wav_bytes(speech, rate), 400, None, "name"),
        "builtin_name": ({"name": "Alloy"}, wav_bytes(speech, rate), 409, None, "name"),
        "no_audio": (ok, None, 400, None, "audio_sample"),
        "ref_text_too_long": ({**ok, "ref_text": "word " * 1000}, wav_bytes(speech, rate), 400, None, "ref_text"),
        "bad_language": ({**ok, "language": "en us!"}, wav_bytes(speech, rate), 400, None, "language"),
    }


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_upload_is_a_specific_4xx_and_stores_nothing(
    case: str, bad_uploads: dict[str, BadUpload], sqlite_server: tuple[Server, Path]
) -> None:
    server, data_dir = sqlite_server
    fields, data, status, code, param = bad_uploads[case]
    before = stored(data_dir), voice_ids(server.url), voice_work(server)
    files = {} if data is None else {"audio_sample": ("ref.wav", data, "audio/wav")}
    response = httpx.post(f"{server.url}/v1/audio/voices", data=fields, files=files, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    # Nothing stored (no row, pending or not; no blob), nothing listed, no voice model built.
    assert (stored(data_dir), voice_ids(server.url), voice_work(server)) == before


def stored(data_dir: Path) -> tuple[int, int]:
    """(voice rows of any status, blob files) in a server's SQLite database and blob directory."""
    with contextlib.closing(sqlite3.connect(data_dir / "chorus.db")) as db:
        (rows,) = db.execute("SELECT count(*) FROM voices").fetchone()
    return int(rows), sum(1 for p in (data_dir / "blobs").rglob("*") if p.is_file())


def test_upload_over_the_limit_without_a_length_is_cut_off(sqlite_server: tuple[Server, Path]) -> None:
    """A chunked upload (no Content-Length) is read up to the limit, then refused: not spooled whole."""
    server, _ = sqlite_server
    boundary = "chorus-test-boundary"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'.encode()
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="audio_sample"; filename="a.wav"\r\n'.encode()
        yield b"Content-Type: audio/wav\r\n\r\n"
        for _ in range(40):  # 40 MiB: the server answers after ~10
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(f"{server.url}/v1/audio/voices", content=body(), headers=headers, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_duplicate_names_and_vtts_routes(sqlite_server: tuple[Server, Path], reference: bytes) -> None:
    server, _ = sqlite_server
    files = {"audio": ("ref.wav", reference, "audio/wav")}
    created = httpx.post(
        f"{server.url}/v1/voices/register", data={"name": "Vee", "text": REF_TEXT}, files=files, timeout=120
    )
    assert created.status_code == 201, created.text
    voice_id = created.json()["voice_id"]
    assert created.json()["status"] == "registered" and created.json()["ref_text"] == REF_TEXT
    again = register(server.url, "VEE", reference)
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"

    path_instead = httpx.post(
        f"{server.url}/v1/voices/register", data={"name": "p", "ref_audio": "/etc/passwd"}, timeout=10
    )
    assert path_instead.status_code == 400 and "server-side paths" in path_instead.json()["error"]["message"]

    with httpx.stream(
        "POST", f"{server.url}/v1/tts/generate", json={"text": SPOKEN, "voice": voice_id}, timeout=120
    ) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert "event: audio" in events and events[-1] == "event: done"
    assert httpx.delete(f"{server.url}/v1/voices/{voice_id}", timeout=10).json() == {
        "voice_id": voice_id,
        "deleted": True,
    }
    builtin = httpx.delete(f"{server.url}/v1/audio/voices/joe", timeout=10)
    assert builtin.status_code == 400


@pytest.mark.parametrize("stage", ["blob_written:processed"])  # the row exists, some blobs too
def test_server_killed_mid_registration(stage: str, reference: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "stalled"
    config = {"data_dir": str(tmp_path / "data"), "safety": NO_CONSENT}
    server = start_server(tmp_path, config, launcher=[*STALLING_SERVER, stage, str(marker)])
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_try_register(server.url, reference)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and thread.is_alive(), f"never reached {stage}: {outcome}\n{server.log()}"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    thread.join(30)
    assert outcome and isinstance(outcome[0], httpx.TransportError)  # the client saw the connection drop

    server = start_server(tmp_path, config)
    try:
        assert voice_ids(server.url) == []  # no half voice
        retried = register(server.url, "Kay", reference)
        assert retried.status_code == 201, retried.text
        assert voice_ids(server.url) == [retried.json()["id"]]
        assert len(say(server.url, "Kay")) > 0
    finally:
        stop_server(server)


def _try_register(url: str, data: bytes) -> object:
    try:
        return register(url, "Kay", data)
    except httpx.TransportError as e:
        return e
