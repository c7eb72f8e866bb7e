"""The spoken-consent steps a client takes, over HTTP: a challenge, a recording of its phrase, a consent."""

from __future__ import annotations

import httpx

from tests.voices.speech import OTHER_SENTENCE, SENTENCE, flite_speak, wav_bytes

REFERENCE_TEXT = f"{SENTENCE} {OTHER_SENTENCE}"


def challenge(url: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    made = httpx.post(f"{url}/v1/audio/voice_consents/challenges", headers=headers, timeout=30)
    assert made.status_code == 201, made.text
    body: dict[str, object] = made.json()
    return body


def record(
    url: str,
    challenge_id: object,
    audio: bytes,
    headers: dict[str, str] | None = None,
    *,
    name: str = "Sally",
    language: str | None = None,
) -> httpx.Response:
    data = {"name": name, "challenge_id": str(challenge_id), **({"language": language} if language else {})}
    files = {"recording": ("consent.wav", audio, "audio/wav")}
    return httpx.post(f"{url}/v1/audio/voice_consents", data=data, files=files, headers=headers, timeout=60)


def spoken(text: object, voice: str = "slt") -> bytes:
    return wav_bytes(*flite_speak(str(text), voice))


def give_consent(url: str, headers: dict[str, str] | None = None, *, voice: str = "slt") -> str:
    """The whole flow for ``voice`` (a flite speaker): the new consent's id."""
    issued = challenge(url, headers)
    made = record(url, issued["id"], spoken(issued["phrase"], voice), headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def reference(voice: str = "slt") -> bytes:
    """The reference clip a voice is cloned from: the same flite speaker, other words."""
    return spoken(REFERENCE_TEXT, voice)


def create_voice(
    url: str, name: str, audio: bytes, consent: str | None, headers: dict[str, str] | None = None
) -> httpx.Response:
    files = {"audio_sample": ("ref.wav", audio, "audio/wav")}
    data = {"name": name, **({"consent": consent} if consent else {})}
    return httpx.post(f"{url}/v1/audio/voices", data=data, files=files, headers=headers, timeout=120)
