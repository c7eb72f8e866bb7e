"""Spoken consent before a voice is cloned.

1. ``challenge`` issues a random phrase (``chorus.consent.phrases``), valid ``challenge_ttl_s`` and once.
2. ``record`` takes the speaker's recording of it: the challenge is consumed first (any attempt with audio uses
   it, so a failed attempt cannot be retried with other recordings), then the recogniser must hear exactly the
   phrase, then the speaker embedding of the recording is kept with the consent (and the recording itself, as
   evidence, in the blob store).
3. Registering a cloned voice (``chorus.voices.service``) with ``consent=<id>`` compares that embedding with the
   reference clip's: the same speaker (cosine similarity ≥ ``speaker_threshold``, calibrated by
   ``chorus bench-consent``) and a consent no other voice has used, or 403.

What it proves and what it does not: that someone who sounds like the reference speaker said a fresh phrase
within the last minutes. A recording of the speaker made earlier cannot say a phrase that did not exist then; a
synthetic voice saying the phrase must both sound like the reference speaker to the embedding and be heard as
the phrase (``chorus bench-consent`` measures both kinds of attempt; chorus's own watermark refuses chorus's
output outright once it is applied). A very good clone made elsewhere is the residual risk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from chorus.consent.phrases import PhraseChecker, new_phrase
from chorus.errors import ChorusError, InvalidRequestError
from chorus.store.consents import ConsentNotFoundError, ConsentStore
from chorus.store.tables import ChallengeRecord, ConsentRecord
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.preprocess import InvalidReferenceError, ReferenceLimits, preprocess_reference

log = logging.getLogger(__name__)

# Languages the recogniser can check (pocketsphinx's bundled model is US English).
CONSENT_LANGUAGES = ("en",)
MAX_NAME_LEN = 200
# A recording of six words: at least a second of speech, at most half a minute of audio.
RECORDING_LIMITS = ReferenceLimits(min_speech_s=1.0, max_duration_s=30.0, min_speech_fraction=0.3)


class Embedder(Protocol):
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


class MarkDetector(Protocol):
    def is_marked(self, audio: np.ndarray, sample_rate: int) -> bool: ...


class ConsentRefusedError(ChorusError):
    """A consent recording was refused; ``code`` says why (phrase_mismatch, challenge_expired, challenge_used,
    not_audio, too_short, too_long, mostly_silence, clipped, synthetic_speech)."""

    status_code = 422
    error_type = "invalid_request_error"

    def __init__(self, code: str, message: str, *, param: str | None = "recording") -> None:
        super().__init__(message, param=param)
        self.code = code


class ConsentRequiredError(ChorusError):
    """Cloning this voice needs a consent it does not have; ``code``: consent_required or speaker_mismatch."""

    status_code = 403
    error_type = "permission_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, param="consent")
        self.code = code


@dataclass(frozen=True)
class ConsentPolicy:
    require_consent: bool = True
    challenge_ttl_s: float = 120.0
    speaker_threshold: float = 0.75


class ConsentService:
    def __init__(
        self,
        store: ConsentStore,
        *,
        encoder: Embedder,
        policy: ConsentPolicy | None = None,
        checker: PhraseChecker | None = None,
        marks: MarkDetector | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.policy = policy or ConsentPolicy()
        self.checker = checker or PhraseChecker()
        self.marks = marks

    # -- challenge → consent ------------------------------------------------------------------------

    def challenge(self, tenant_id: str) -> ChallengeRecord:
        return self.store.issue(tenant_id, new_phrase(), self.policy.challenge_ttl_s)

    def record(
        self, tenant_id: str, *, name: str, language: str | None, challenge_id: str, recording: bytes
    ) -> ConsentRecord:
        name = name.strip()
        if not name or len(name) > MAX_NAME_LEN or any(not c.isprintable() for c in name):
            raise InvalidRequestError(f"name must be 1-{MAX_NAME_LEN} printable characters", param="name")
        language = check_language(language)
        challenge = self.store.challenge(tenant_id, challenge_id)  # 404 when unknown to this tenant
        try:
            clip = preprocess_reference(recording, limits=RECORDING_LIMITS)
        except InvalidReferenceError as e:
            if e.code == "too_large":
                raise
            raise ConsentRefusedError(e.code, e.message.replace("audio sample", "recording")) from e
        state = self.store.use_challenge(tenant_id, challenge.id)
        if state == "expired":
            raise ConsentRefusedError(
                "challenge_expired", "the challenge expired; ask for a new one", param="challenge_id"
            )
        if state in ("used", "unknown"):
            raise ConsentRefusedError(
                "challenge_used", "the challenge was used already; ask for a new one", param="challenge_id"
            )
        heard = self.checker.check(clip.audio, clip.sample_rate, challenge.phrase)
        if not heard.matches:
            log.info("consent refused (tenant %s, challenge %s): phrase mismatch", tenant_id, challenge.id)
            raise ConsentRefusedError(
                "phrase_mismatch",
                "the recording does not say the challenge phrase (read all of it, clearly); ask for a new challenge",
            )
        if self.marks is not None and self.marks.is_marked(clip.audio, clip.sample_rate):
            raise ConsentRefusedError("synthetic_speech", "the recording carries chorus's watermark: it is synthetic")
        try:
            embedding = self.encoder.embed(clip.audio, clip.sample_rate)
        except ValueError as e:
            raise ConsentRefusedError("not_audio", f"no speaker could be measured in the recording: {e}") from e
        return self.store.create(
            tenant_id,
            name=name,
            language=language,
            challenge=challenge,
            recording=recording,
            embedding=SpeakerEncoder.to_bytes(embedding),
        )

    # -- what voice registration asks ---------------------------------------------------------------

    def admit(self, tenant_id: str, consent_id: str | None) -> ConsentRecord | None:
        """Before any work: the unused consent a new cloned voice will use, or None when none is required and
        none was given; 403 consent_required otherwise."""
        if consent_id is None or not consent_id.strip():
            if self.policy.require_consent:
                raise ConsentRequiredError(
                    "consent_required",
                    "cloning a voice needs the speaker's recorded consent: POST /v1/audio/voice_consents/challenges, "
                    "record the phrase, POST /v1/audio/voice_consents, then pass its id as consent",
                )
            return None
        try:
            consent = self.store.get(tenant_id, consent_id.strip())
        except ConsentNotFoundError:
            raise ConsentRequiredError("consent_required", f"no consent {consent_id!r}") from None
        if consent.voice_id is not None:
            raise ConsentRequiredError(
                "consent_required", f"consent {consent.id} was used for another voice; a consent authorises one voice"
            )
        return consent

    def similarity(self, consent: ConsentRecord, embedding: np.ndarray) -> float:
        return SpeakerEncoder.similarity(SpeakerEncoder.from_bytes(consent.embedding), embedding)

    def check_speaker(self, consent: ConsentRecord, embedding: np.ndarray) -> float:
        """The similarity of the reference clip's speaker to the consent's; 403 speaker_mismatch below the
        threshold."""
        score = self.similarity(consent, embedding)
        if score < self.policy.speaker_threshold:
            log.info("consent %s refused for a voice: speaker similarity %.3f", consent.id, score)
            raise ConsentRequiredError(
                "speaker_mismatch",
                f"the audio sample's speaker does not match the speaker who recorded consent {consent.id}",
            )
        return score

    def claim(self, consent: ConsentRecord, voice_id: str) -> None:
        if not self.store.claim(consent.tenant_id, consent.id, voice_id):
            raise ConsentRequiredError("consent_required", f"consent {consent.id} was used for another voice meanwhile")

    def release(self, consent: ConsentRecord, voice_id: str) -> None:
        self.store.release(consent.id, voice_id)


def check_language(language: str | None) -> str:
    if language is None or not language.strip():
        return "en"
    code = language.strip()
    if code.lower().replace("_", "-").split("-")[0] not in CONSENT_LANGUAGES:
        raise ConsentRefusedError(
            "unsupported_language",
            f"consent can be checked in {', '.join(CONSENT_LANGUAGES)} only (the offline recogniser's languages)",
            param="language",
        )
    return code


def consent_object(record: ConsentRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "object": "audio.voice_consent",
        "name": record.name,
        "language": record.language,
        "created_at": int(record.created_at.timestamp()),
        "phrase": record.phrase,
        "recording_sha256": record.recording_sha256,
        "voice_id": record.voice_id,
    }
