"""The voice-agent WebSocket over a real `chorus serve`: tokens in, one continuous stream out, timestamps,
barge-in, bad messages, keys and tenants, vanishing clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from chorus.client import SessionEvent, SpeechSession
from chorus.timestamps import split_words
from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.e2e]

RATE = 22_050  # the bundled voice's own rate: no resampling between the two paths compared
SENTENCES = "The sun is warm today. The sky is clear and blue. Birds are singing in the tall trees."
DETERMINISTIC = {"noise_scale": 0, "noise_w_scale": 0, "seed": 7}


@pytest.fixture(scope="module")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("realtime"), {"server": {"output_sample_rate": RATE}})
    yield srv
    stop_server(srv)


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://")


def tokens(text: str, size: int = 3) -> list[str]:
    """LLM-like fragments: pieces of a few characters, words cut anywhere."""
    return [text[i : i + size] for i in range(0, len(text), size)]


async def speak(server: Server, text: str, *, pace_s: float = 0.0, **settings: Any) -> list[SessionEvent]:
    """Feed ``text`` as fragments, flush, collect every event up to the utterance's done."""
    async with SpeechSession.connect(ws_url(server), **settings) as tts:
        for piece in tokens(text):
            await tts.append(piece)
            if pace_s:
                await asyncio.sleep(pace_s)
        await tts.flush()
        events = []
        async for event in tts.events():
            events.append(event)
            if event.type == "response.audio.done":
                break
        return events


def pcm(events: list[SessionEvent]) -> np.ndarray:
    data = b"".join(e.audio for e in events if e.type == "audio")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def one_request(server: Server, text: str) -> np.ndarray:
    body = {"model": "tts-1", "input": text, "voice": "joe", "response_format": "pcm", **DETERMINISTIC}
    r = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<i2").astype(np.float32) / 32768.0


def wait_idle(server: Server, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = server.stats()
        if (stats["active_slots"], stats["waiting"]) == (0, 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_tokens_in_audio_out_equals_one_request(rt_server: Server) -> None:
    events = asyncio.run(speak(rt_server, SENTENCES, pace_s=0.002, voice="joe", sample_rate=RATE, **DETERMINISTIC))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.audio.start" and kinds[-1] == "response.audio.done"
    assert "error" not in kinds
    session_audio, reference = pcm(events), one_request(rt_server, SENTENCES)
    # Each seam between separately made segments is crossfaded (10 ms): the session may be shorter by that much
    # per seam, never longer, and otherwise the same speech.
    seams = 2
    overlap = round(0.01 * RATE)
    assert reference.size - seams * overlap - 2 <= session_audio.size <= reference.size + 2
    n = min(session_audio.size, reference.size)
    diff = session_audio[:n] - reference[:n]
    # The watermark (keyed, restarted at each request) differs between the two, the speech must not: measured
    # 0.06 of the signal's RMS (-24 dB); a missing, doubled or shifted segment makes it ~1.
    ratio = np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean(reference[:n] ** 2))
    assert ratio < 0.12, f"not the same speech (relative difference {ratio:.3f})"
    done = events[-1].data
    assert done["status"] == "completed"
    assert done["usage"]["input_characters"] == len(SENTENCES)
    assert abs(done["usage"]["audio_seconds"] - session_audio.size / RATE) < 0.05


def test_timestamps_are_monotonic_within_the_audio_and_name_every_word(rt_server: Server) -> None:
    text = "It costs $3.50 on Jan. 5th, Dr. Smith said. Then we walked home slowly."
    events = asyncio.run(speak(rt_server, text, voice="joe", sample_rate=RATE, timestamps=True))
    words = [w for e in events if e.type == "response.timestamps" for w in e.words]
    assert [w["word"] for w in words] == split_words(text)
    duration = pcm(events).size / RATE
    previous_end = 0.0
    for w in words:
        assert previous_end - 0.001 <= w["start_s"] <= w["end_s"] <= duration + 0.001, w
        previous_end = w["end_s"]
    assert words[-1]["end_s"] > 0.8 * duration  # the last word ends near the end (a short silence follows)


def test_a_fast_typist_gets_one_stream_without_gaps(rt_server: Server) -> None:
    text = " ".join([SENTENCES] * 3)
    events = asyncio.run(speak(rt_server, text, voice="joe", sample_rate=RATE))
    audio_events = [e for e in events if e.type == "audio"]
    # Playback from the first byte in real time: no chunk may arrive after the audio before it has played out.
    start, played = audio_events[0].received_at, 0.0
    for e in audio_events:
        assert e.received_at <= start + played + 0.05, "the client's audio ran out"
        played += len(e.audio) / 2 / RATE
    assert sum(1 for e in events if e.type == "response.audio.start") == 1


async def _barge_in(server: Server) -> tuple[list[str | bytes], list[dict[str, Any]]]:
    """Raw frames (no client-side filtering): what the server sends after a cancel, then the next utterance."""
    async with websockets.connect(ws_url(server) + "/v1/audio/speech/stream") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "voice": "joe", "sample_rate": RATE}))
        await ws.recv()
        await ws.send(json.dumps({"type": "input_text.append", "text": " ".join([SENTENCES] * 8) + " "}))
        frames = 0
        while frames < 3:
            frames += isinstance(await asyncio.wait_for(ws.recv(), 30), bytes)
        await ws.send(json.dumps({"type": "response.cancel"}))
        after: list[str | bytes] = []
        while not after or not (isinstance(after[-1], str) and "response.cancelled" in after[-1]):
            after.append(await asyncio.wait_for(ws.recv(), 10))
        # Ready for the next utterance at once.
        await ws.send(json.dumps({"type": "input_text.append", "text": "Hello again."}))
        await ws.send(json.dumps({"type": "input_text.flush"}))
        following: list[dict[str, Any]] = []
        while not following or following[-1]["type"] != "response.audio.done":
            message = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(message, str):
                following.append(json.loads(message))
        return after, following


def test_cancel_stops_audio_at_once_frees_slots_and_the_session_goes_on(rt_server: Server) -> None:
    after, following = asyncio.run(_barge_in(rt_server))
    audio_after = [f for f in after if isinstance(f, bytes)]
    assert len(audio_after) <= 1, f"{len(audio_after)} audio frames after the cancel"  # one may be on its way
    events = [json.loads(f) for f in after if isinstance(f, str)]
    assert [e["type"] for e in events] == ["response.audio.done", "response.cancelled"]
    assert events[0]["status"] == "cancelled" and events[1]["response_ids"] == [events[0]["response_id"]]
    assert following[-1]["status"] == "completed" and following[-1]["usage"]["audio_seconds"] > 0.3
    assert following[0]["type"] == "response.audio.start" and following[0]["start_s"] > 0  # the session's clock
    stats = wait_idle(rt_server)
    assert (stats["active_slots"], stats["waiting"]) == (0, 0)


async def _raw(server: Server, frames: list[str | bytes], expect: int) -> list[dict[str, Any]]:
    async with websockets.connect(ws_url(server) + "/v1/audio/speech/stream") as ws:
        got = [json.loads(await ws.recv())]
        for frame in frames:
            await ws.send(frame)
        while len(got) < expect:
            message = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(message, str):
                got.append(json.loads(message))
        return got


def test_bad_messages_get_error_events_and_the_session_survives(rt_server: Server) -> None:
    frames: list[str | bytes] = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "no.such.thing"}),
        json.dumps({"type": "input_text.append"}),
        json.dumps({"type": "session.update", "speed": 99}),
        json.dumps({"type": "session.update", "sample_rate": "fast"}),
        json.dumps({"type": "session.update", "colour": "blue"}),
        json.dumps({"type": "session.update", "voice": "no-such-voice"}),
        b"\x00\x01binary",
        json.dumps({"type": "input_text.append", "text": "Still here."}),
        json.dumps({"type": "input_text.flush"}),
    ]
    got = asyncio.run(_raw(rt_server, frames, expect=1 + 9 + 2))
    errors = [g for g in got if g["type"] == "error"]
    params = [e["error"]["param"] for e in errors]
    assert params[:7] == [
        "message",
        "message",
        "type",
        "text",
        "session.speed",
        "session.sample_rate",
        "session.colour",
    ]
    assert params[7:] == ["voice", "message"]  # an unknown voice, refused at the update; a binary frame
    assert [g["type"] for g in got[-2:]] == ["response.audio.start", "response.audio.done"]
    # Spoken with the default voice: the refused one did not stick.
    assert got[-1]["status"] == "completed" and got[-1]["usage"]["audio_seconds"] > 0.3
    assert httpx.get(f"{rt_server.url}/health", timeout=5).status_code == 200


def test_a_client_that_vanishes_mid_session_frees_everything(rt_server: Server) -> None:
    async def vanish() -> None:
        ws = await websockets.connect(ws_url(rt_server) + "/v1/audio/speech/stream")
        await ws.recv()
        await ws.send(json.dumps({"type": "input_text.append", "text": " ".join([SENTENCES] * 10) + " "}))
        await ws.recv()  # the utterance started
        ws.transport.abort()  # no close frame: the network just went away

    asyncio.run(vanish())
    stats = wait_idle(rt_server)
    assert (stats["active_slots"], stats["waiting"]) == (0, 0)
    metrics = httpx.get(f"{rt_server.url}/metrics", timeout=5).text
    assert "chorus_agent_sessions 0.0" in metrics


def _sse(response: httpx.Response) -> list[tuple[str | None, dict[str, Any]]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
    return events


def test_sse_routes_carry_the_words_of_their_chunks(rt_server: Server) -> None:
    import base64

    text = "Good morning, Dr. Smith. The results came back at 3.5 percent, which is fine."
    expected = split_words(text)
    openai_body = {"model": "tts-1", "input": text, "voice": "joe", "response_format": "pcm", "stream_format": "sse"}
    routes = [
        ("/v1/audio/speech", openai_body | {"timestamps": True}, "speech.audio.delta", "speech.audio.done"),
        ("/v1/tts/generate", {"text": text, "timestamps": True}, "audio", "done"),
    ]
    for path, body, delta, end in routes:
        with httpx.stream("POST", f"{rt_server.url}{path}", json=body, timeout=60) as r:
            assert r.status_code == 200
            events = _sse(r)
        words: list[dict[str, Any]] = []
        heard = 0.0
        for name, data in events:
            kind = name or data.get("type")
            if kind == delta:
                heard += len(base64.b64decode(data["audio"])) / 2 / RATE
                for w in data["words"]:  # a chunk names the words whose audio has started by its end
                    assert w["start_s"] <= heard + 0.02, (path, w, heard)
                words += data["words"]
            elif kind == end:
                words += data["words"]
        assert [w["word"] for w in words] == expected, path
        starts = [w["start_s"] for w in words]
        assert starts == sorted(starts) and all(w["end_s"] <= heard + 0.01 for w in words), path
    refused = httpx.post(
        f"{rt_server.url}/v1/audio/speech",
        json=openai_body | {"stream_format": "audio", "timestamps": True},
        timeout=30,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "timestamps"
