"""API keys and tenants over a real `chorus serve` (auth.mode required on 127.0.0.1; keys made by the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
import yaml

from chorus.client import SessionError, SpeechSession
from tests.e2e.conftest import Server, free_port, start_server, stop_server
from tests.e2e.consent_flow import challenge, create_voice, give_consent, record, reference
from tests.e2e.consent_flow import spoken as spoken_by
from tests.voices.speech import OTHER_SENTENCE, SENTENCE

pytestmark = [pytest.mark.e2e]
LONG_TEXT = " ".join([SENTENCE, OTHER_SENTENCE] * 6)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    command = [sys.executable, "-m", "chorus.cli", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def create_key(config: Path, tenant: str, *extra: str) -> str:
    done = cli(config, "keys", "create", "--tenant", tenant, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]  # the key is the last line


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("auth")
    config = root / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(root / "data")}))
    create_key(config, "tenant-a")  # a server that requires keys starts only when one exists
    server = start_server(root, {"data_dir": str(root / "data"), "auth": {"mode": "required"}})
    yield server, config
    stop_server(server)


@pytest.mark.parametrize(("host", "mode"), [("0.0.0.0", "auto"), ("127.0.0.1", "required")])
def test_a_server_that_needs_keys_and_has_none_refuses_to_start(tmp_path: Path, host: str, mode: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "auth": {"mode": mode}}))
    done = cli(config, "serve", "--host", host, "--port", str(free_port()))
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chorus: config error: auth:") and "chorus keys create" in last
    assert "Uvicorn running" not in done.stdout + done.stderr


def test_missing_bad_unknown_and_revoked_keys_are_401(keyed: tuple[Server, Path]) -> None:
    server, config = keyed
    key = create_key(config, "tenant-a")
    url = f"{server.url}/v1/audio/voices"
    cases = {
        "missing": ({}, "missing_api_key"),
        "not bearer": ({"Authorization": f"Basic {key}"}, "missing_api_key"),
        "malformed": (auth("sk-nonsense"), "invalid_api_key"),
        "unknown": (auth("sk-chorus-0123456789abcdef-" + "x" * 43), "invalid_api_key"),
    }
    for name, (headers, code) in cases.items():
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == code, name
        assert response.headers["www-authenticate"] == "Bearer"
        assert key not in response.text
    assert httpx.get(url, headers=auth(key), timeout=10).status_code == 200
    listed = cli(config, "keys", "list").stdout.splitlines()[1:]
    key_id = next(row.split("\t")[0] for row in listed if key[10:26] in row.split("\t")[0])
    assert cli(config, "keys", "revoke", key_id).returncode == 0  # another process: the server's next request sees it
    response = httpx.get(url, headers=auth(key), timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"
    # Probes stay open: an orchestrator carries no key.
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200


def test_another_tenants_voices_and_consents_behave_like_unknown_ids(keyed: tuple[Server, Path]) -> None:
    server, config = keyed
    a, b = auth(create_key(config, "tenant-a")), auth(create_key(config, "tenant-b"))
    consent_id = give_consent(server.url, a)
    spare_consent = give_consent(server.url, a)  # unused: tenant B must not be able to use it either
    made = create_voice(server.url, "alice", reference(), consent_id, a)
    assert made.status_code == 201, made.text
    voice_id = made.json()["id"]
    unknown_consent = "cons_" + "0" * 24
    unknown_id = "voice_" + "0" * len(voice_id.removeprefix("voice_"))

    def as_b(method: str, path: str, **kw: object) -> httpx.Response:
        return httpx.request(method, f"{server.url}{path}", headers=b, timeout=60, **kw)  # type: ignore[arg-type]

    listed = as_b("GET", "/v1/audio/voices").json()["data"]
    assert voice_id not in [v["id"] for v in listed]
    assert voice_id not in [v["id"] for v in as_b("GET", "/v1/voices").json()["voices"]]
    for method, path, theirs_id, unknown in [
        ("GET", "/v1/audio/voices/{}", voice_id, unknown_id),
        ("DELETE", "/v1/audio/voices/{}", voice_id, unknown_id),
        ("DELETE", "/v1/voices/{}", voice_id, unknown_id),
        ("GET", "/v1/audio/voice_consents/{}", consent_id, unknown_consent),
        ("DELETE", "/v1/audio/voice_consents/{}", spare_consent, unknown_consent),
    ]:
        theirs, nothing = as_b(method, path.format(theirs_id)), as_b(method, path.format(unknown))
        assert theirs.status_code == nothing.status_code == 404, (method, path)
        assert theirs.json()["error"]["type"] == nothing.json()["error"]["type"]
    assert as_b("GET", "/v1/audio/voice_consents").json()["data"] == []
    # A's consent cannot authorise B's voice (refused exactly as an unknown id), nor A's challenge B's consent.
    for consent in (spare_consent, unknown_consent):
        refused = create_voice(server.url, "bob", reference(), consent, b)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "consent_required")
        assert refused.json()["error"]["message"] == f"no consent {consent!r}"
    issued = challenge(server.url, a)
    assert record(server.url, issued["id"], spoken_by(issued["phrase"]), b).status_code == 404
    for name in (voice_id, "alice"):
        speech = as_b("POST", "/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": name})
        nobody = as_b("POST", "/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": name + "x"})
        assert speech.status_code == nobody.status_code == 400
        assert speech.json()["error"]["param"] == nobody.json()["error"]["param"] == "voice"
    # Tenant A still has its voice, and speaks with it.
    assert httpx.get(f"{server.url}/v1/audio/voices/{voice_id}", headers=a, timeout=10).status_code == 200
    spoken = httpx.post(
        f"{server.url}/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello.", "voice": "alice", "response_format": "pcm"},
        headers=a,
        timeout=60,
    )
    assert spoken.status_code == 200 and len(spoken.content) > 0


def test_voice_agent_sessions_need_a_key_and_keep_to_their_tenant(keyed: tuple[Server, Path]) -> None:
    server, config = keyed
    key_a, key_b = create_key(config, "tenant-a"), create_key(config, "tenant-b")
    made = create_voice(server.url, "carol", reference(), give_consent(server.url, auth(key_a)), auth(key_a))
    assert made.status_code == 201, made.text
    url = server.url.replace("http://", "ws://") + "/v1/audio/speech/stream"

    async def first_event(query: str = "", headers: dict[str, str] | None = None) -> tuple[str, str | None]:
        async with websockets.connect(url + query, additional_headers=headers or {}) as ws:
            first = json.loads(await ws.recv())
            if first["type"] != "error":
                return first["type"], None
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008 and ws.close_reason
            return first["error"]["code"], first["error"]["type"]

    assert asyncio.run(first_event()) == ("missing_api_key", "authentication_error")
    assert asyncio.run(first_event(headers=auth("sk-nope")))[0] == "invalid_api_key"
    assert asyncio.run(first_event(headers=auth(key_a)))[0] == "session.created"
    assert asyncio.run(first_event(query=f"?api_key={key_a}"))[0] == "session.created"  # browsers

    async def say(key: str, voice: str) -> list[dict[str, object]]:
        async with SpeechSession.connect(server.url, api_key=key, voice=voice) as tts:
            await tts.append("Hello from carol.")
            await tts.flush()
            got = []
            async for event in tts.events():
                got.append({"type": event.type, **event.data})
                if event.type == "response.audio.done":
                    return got
        return got

    mine = asyncio.run(say(key_a, "carol"))
    assert mine[-1]["status"] == "completed" and any(e["type"] == "audio" for e in mine)
    refusals = []
    for voice in ("carol", "nobody"):  # tenant B: carol is refused exactly as a voice that does not exist
        with pytest.raises(SessionError) as refused:
            asyncio.run(say(key_b, voice))
        refusals.append(refused.value.data["error"])
    assert refusals[0]["param"] == refusals[1]["param"] == "voice"
    assert refusals[0]["message"] == refusals[1]["message"].replace("nobody", "carol")


def test_a_keys_concurrency_limit_is_429_with_retry_after(keyed: tuple[Server, Path]) -> None:
    server, config = keyed
    limited = auth(create_key(config, "tenant-c", "--max-concurrency", "1"))
    other = auth(create_key(config, "tenant-c"))
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"}
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{server.url}/v1/audio/speech", json=body, headers=limited) as running,
    ):
        assert running.status_code == 200
        chunks = running.iter_bytes()
        next(chunks)
        refused = httpx.post(f"{server.url}/v1/audio/speech", json=body | {"input": "Hi."}, headers=limited, timeout=60)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "key_concurrency_limit"
        assert int(refused.headers["retry-after"]) >= 1
        # Another key of the same tenant has its own count.
        assert (
            httpx.post(
                f"{server.url}/v1/audio/speech", json=body | {"input": "Hi."}, headers=other, timeout=60
            ).status_code
            == 200
        )
        for _ in chunks:  # let the first request finish
            pass
    again = httpx.post(f"{server.url}/v1/audio/speech", json=body | {"input": "Hi."}, headers=limited, timeout=60)
    assert again.status_code == 200


def test_the_metrics_port_serves_prometheus_without_a_key_and_nothing_else(tmp_path: Path) -> None:
    """Where keys are required, /metrics on the API port needs an admin key; server.metrics_port serves it keyless
    for a scraper (and only it: every other path there is 404, the API stays behind keys)."""
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    create_key(config, "tenant-a")
    port = free_port()
    settings = {"data_dir": str(tmp_path / "data"), "auth": {"mode": "required"}, "server": {"metrics_port": port}}
    server = start_server(tmp_path, settings)
    try:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert "chorus_queue_depth 0.0" in scraped.text and "chorus_ready 1.0" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{port}/v1/audio/voices", timeout=10).status_code == 404
    finally:
        stop_server(server)
