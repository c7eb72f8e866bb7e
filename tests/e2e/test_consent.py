"""Spoken consent over a real `chorus serve` with the default safety settings (consent required): the whole flow
a client takes, and every refusal with its status and code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from chorus.consent.phrases import PHRASE_WORDS, WORDS
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.consent_flow import challenge, create_voice, give_consent, record, reference, spoken
from tests.e2e.test_auth import cli

pytestmark = [pytest.mark.e2e]
TTL_S = 4.0


@pytest.fixture(scope="module")
def consent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("consent")
    # Only the challenge's lifetime is shortened (to test expiry); consent is required, as by default.
    server = start_server(root, {"data_dir": str(root / "data"), "safety": {"challenge_ttl_s": TTL_S}})
    yield server, root / "data"
    stop_server(server)


def error(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json()["error"].get("code")


def test_challenge_phrase_is_fresh_words_with_an_expiry(consent_server: tuple[Server, Path]) -> None:
    server, _ = consent_server
    before = time.time()
    first, second = challenge(server.url), challenge(server.url)
    words = str(first["phrase"]).split()
    assert len(words) == PHRASE_WORDS >= 6 and set(words) <= set(WORDS) and len(set(words)) == len(words)
    assert first["phrase"] != second["phrase"] and first["id"] != second["id"]
    assert before + TTL_S - 2 <= float(str(first["expires_at"])) <= time.time() + TTL_S + 1


def test_consent_then_voice_then_speech(consent_server: tuple[Server, Path]) -> None:
    server, data = consent_server
    consent_id = give_consent(server.url)
    consent = httpx.get(f"{server.url}/v1/audio/voice_consents/{consent_id}", timeout=10).json()
    assert consent["object"] == "audio.voice_consent" and consent["id"].startswith("cons_")
    assert consent["name"] == "Sally" and consent["language"] == "en" and consent["voice_id"] is None
    listed = httpx.get(f"{server.url}/v1/audio/voice_consents", timeout=10).json()["data"]
    assert consent_id in [c["id"] for c in listed]

    made = create_voice(server.url, "sally", reference(), consent_id)
    assert made.status_code == 201, made.text
    voice = made.json()
    assert voice["consent_id"] == consent_id and voice["consent_status"] == "verified"
    speech = httpx.post(
        f"{server.url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "sally", "input": "Hello there.", "response_format": "wav"},
        timeout=60,
    )
    assert speech.status_code == 200 and len(speech.content) > 10_000
    used = httpx.get(f"{server.url}/v1/audio/voice_consents/{consent_id}", timeout=10).json()
    assert used["voice_id"] == voice["id"]

    # A consent authorises one voice.
    again = create_voice(server.url, "sally-2", reference(), consent_id)
    assert error(again) == (403, "consent_required") and "one voice" in again.json()["error"]["message"]
    # Its recording is evidence: kept while the voice exists.
    assert error(httpx.delete(f"{server.url}/v1/audio/voice_consents/{consent_id}", timeout=10)) == (
        409,
        "consent_in_use",
    )
    assert httpx.delete(f"{server.url}/v1/audio/voices/{voice['id']}", timeout=10).status_code == 200
    gone = httpx.delete(f"{server.url}/v1/audio/voice_consents/{consent_id}", timeout=10)
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert httpx.get(f"{server.url}/v1/audio/voice_consents/{consent_id}", timeout=10).status_code == 404
    assert not list((data / "blobs" / "consents" / "default").glob(f"{consent_id}/*"))

    config = data.parent / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data)}))
    expected = [
        ("consent.create", consent_id),
        ("voice.create", voice["id"]),
        ("synthesis", voice["id"]),
        ("voice.delete", voice["id"]),
        ("consent.delete", consent_id),
    ]
    for _ in range(50):  # rows are written off the request path, within moments
        exported = cli(config, "audit", "export", "--tenant", "default").stdout
        rows = [json.loads(line) for line in exported.splitlines()]
        kinds = [(r["kind"], r["subject"]) for r in rows if r["subject"] in (consent_id, voice["id"])]
        if len(kinds) >= len(expected):
            break
        time.sleep(0.1)
    assert kinds == expected
    created = next(r for r in rows if r["kind"] == "voice.create" and r["subject"] == voice["id"])
    assert created["detail"]["consent_id"] == consent_id


def test_a_cloned_voice_without_a_valid_consent_is_refused(consent_server: tuple[Server, Path]) -> None:
    server, _ = consent_server
    assert error(create_voice(server.url, "nobody", reference(), None)) == (403, "consent_required")
    assert error(create_voice(server.url, "nobody", reference(), "cons_" + "0" * 24)) == (403, "consent_required")
    # slt consented; the clip is another person (flite's awb).
    consent_id = give_consent(server.url, voice="slt")
    mismatch = create_voice(server.url, "not-slt", reference("awb"), consent_id)
    assert error(mismatch) == (403, "speaker_mismatch")
    # The vTTS route obeys the same rule.
    files = {"audio": ("ref.wav", reference(), "audio/wav")}
    vtts = httpx.post(f"{server.url}/v1/voices/register", data={"name": "v"}, files=files, timeout=60)
    assert error(vtts) == (403, "consent_required")
    assert [
        v for v in httpx.get(f"{server.url}/v1/audio/voices", timeout=10).json()["data"] if v["type"] == "cloned"
    ] == []
    # The refused attempts did not use the consent: slt's own clip still gets a voice with it, over vTTS.
    data = {"name": "slt", "consent": consent_id}
    made = httpx.post(f"{server.url}/v1/voices/register", data=data, files=files, timeout=120)
    assert made.status_code == 201, made.text
    assert httpx.delete(f"{server.url}/v1/voices/{made.json()['voice_id']}", timeout=10).status_code == 200


def test_recordings_that_do_not_prove_consent_are_refused(consent_server: tuple[Server, Path]) -> None:
    server, _ = consent_server
    issued = challenge(server.url)
    other = challenge(server.url)  # a phrase the speaker was not asked to say
    wrong = record(server.url, issued["id"], spoken(other["phrase"]))
    assert error(wrong) == (422, "phrase_mismatch")
    # A challenge is used by any attempt: the right phrase after a wrong one needs a new challenge.
    assert error(record(server.url, issued["id"], spoken(issued["phrase"]))) == (422, "challenge_used")
    # Replaying an earlier consent's recording: it says the earlier phrase.
    fresh = challenge(server.url)
    assert error(record(server.url, fresh["id"], spoken(issued["phrase"]))) == (422, "phrase_mismatch")

    late = challenge(server.url)
    time.sleep(TTL_S + 0.5)
    assert error(record(server.url, late["id"], spoken(late["phrase"]))) == (422, "challenge_expired")

    junk = challenge(server.url)
    assert error(record(server.url, junk["id"], b"this is not audio" * 100)) == (422, "not_audio")
    # ... which did not use the challenge.
    assert record(server.url, junk["id"], spoken(junk["phrase"])).status_code == 201

    unknown = record(server.url, "chal_" + "0" * 24, spoken("anything at all"))
    assert unknown.status_code == 404
    french = challenge(server.url)
    assert error(record(server.url, french["id"], spoken(french["phrase"]), language="fr")) == (
        422,
        "unsupported_language",
    )
