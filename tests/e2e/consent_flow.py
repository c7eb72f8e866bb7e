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


# What a client does when the recogniser mishears a clear reading (422 phrase_mismatch, "ask for a new
# challenge"): one more challenge. The recogniser mishears about 1 in 300 clear synthetic readings of random
# phrases (3 of 900: ``bench/results/consent-phrases.md``; tests/consent/test_phrases.py pins it on fixed phrases),
# and the suite gives some 25 consents, so a second attempt keeps CI from failing on the draw while a recogniser
# that stops hearing phrases still fails every test that needs a consent.
CONSENT_ATTEMPTS = 2


def give_consent(url: str, headers: dict[str, str] | None = None, *, voice: str = "slt") -> str:
    """The whole flow for ``voice`` (a flite speaker): the new consent's id."""
    for _ in range(CONSENT_ATTEMPTS):
        issued = challenge(url, headers)
        made = record(url, issued["id"], spoken(issued["phrase"], voice), headers)
        misheard = made.status_code == 422 and made.json()["error"]["code"] == "phrase_mismatch"
        if not misheard:
            break
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
