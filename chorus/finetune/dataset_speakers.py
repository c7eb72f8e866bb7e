"""Is a dataset one speaker, and the speaker who consented? Checked on a sample of its clips.

Each sampled clip is embedded (GE2E, ``chorus.voices.embedding``); then

- the dataset (the normalised mean of the sampled clips) is compared with the consent recording's embedding:
  below ``safety.consent_speaker_threshold`` it is not the consenting speaker (``speaker_mismatch``);
- each clip is compared with the mean of the other sampled clips (leave-one-out): below the same threshold it is
  another speaker than the rest of the dataset (``mixed_speakers``);
- each clip is also compared with the consent on its own: below the threshold minus ``CLIP_MARGIN`` it is refused as
  another speaker too (``mixed_speakers``), which catches a dataset that is half someone else.

Both are 403s naming the clips at fault with their scores. A single short clip against a short consent recording
is noisy (flite's voices: the same speaker 0.75-0.94 on 1.5-5 s clips, other speakers 0.39-0.72; one same-speaker
clip was measured at 0.746), so a clip alone is held to the lower bar and the dataset's mean to the full one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from chorus.errors import ChorusError
from chorus.voices.embedding import SpeakerEncoder

MAX_NAMED = 20  # clips named in an error message (all of them are in the error's ``clips``)

# A single clip against the consent is held to the threshold minus this (see the module docstring).
CLIP_MARGIN = 0.1


class Embedder(Protocol):
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


class DatasetSpeakerError(ChorusError):
    """The dataset's speaker is not covered by a consent; ``code``: consent_required, consent_revoked,
    speaker_mismatch or mixed_speakers; ``clips``: the clips at fault with their similarities."""

    status_code = 403
    error_type = "permission_error"

    def __init__(self, code: str, message: str, clips: Sequence[SpeakerScore] = ()) -> None:
        super().__init__(message, param="consent" if code.startswith("consent") else "archive")
        self.code = code
        self.clips = list(clips)


@dataclass(frozen=True, slots=True)
class SpeakerScore:
    file_name: str
    consent_similarity: float | None  # None without a consent
    others_similarity: float | None  # None with a single clip checked

    def to_json(self) -> dict[str, object]:
        return {
            "file_name": self.file_name,
            "consent_similarity": self.consent_similarity,
            "others_similarity": self.others_similarity,
        }


@dataclass(frozen=True, slots=True)
class SpeakerCheck:
    embedding: np.ndarray  # (256,) float32, unit length: the mean of the sampled clips
    scores: list[SpeakerScore]
    threshold: float

    def to_json(self, consent_id: str | None) -> dict[str, object]:
        return {
            "consent_id": consent_id,
            "threshold": self.threshold,
            "checked": len(self.scores),
            "clips": [s.to_json() for s in self.scores],
        }


def check_speakers(
    samples: Sequence[tuple[str, np.ndarray, int]],
    *,
    encoder: Embedder,
    consent: np.ndarray | None,
    threshold: float,
    consent_id: str | None,
) -> SpeakerCheck:
    """``samples``: (file_name, audio, sample_rate) of the sampled clips. Raises DatasetSpeakerError."""
    names: list[str] = []
    vectors: list[np.ndarray] = []
    for name, audio, rate in samples:
        try:
            vectors.append(np.asarray(encoder.embed(audio, rate), np.float64))
        except ValueError:
            continue  # nothing to measure in this clip: the others decide
        names.append(name)
    if not vectors:
        raise DatasetSpeakerError("speaker_mismatch", "no speaker could be measured in the dataset's clips")
    stacked = np.stack(vectors)  # [n, 256]
    total = stacked.sum(axis=0)
    scores = []
    for name, vector in zip(names, stacked, strict=True):
        to_consent = round(SpeakerEncoder.similarity(consent, vector), 3) if consent is not None else None
        others = total - vector
        to_others = round(SpeakerEncoder.similarity(others, vector), 3) if len(vectors) > 1 else None
        scores.append(SpeakerScore(name, to_consent, to_others))
    mean = total / np.linalg.norm(total)
    floor = threshold - CLIP_MARGIN
    missed = [s for s in scores if s.consent_similarity is not None and s.consent_similarity < floor]
    odd = [s for s in scores if s.others_similarity is not None and s.others_similarity < threshold]
    mismatch = consent is not None and SpeakerEncoder.similarity(consent, mean) < threshold
    if mismatch and not odd:
        raise DatasetSpeakerError(
            "speaker_mismatch",
            f"the dataset's speaker does not match the speaker who recorded consent {consent_id} "
            f"({_named(scores)} checked)",
            scores,
        )
    if missed or odd:
        faulty = [s for s in scores if s in missed or s in odd]
        raise DatasetSpeakerError(
            "mixed_speakers",
            f"the dataset mixes speakers: {_named(faulty)} "
            + (f"do not match consent {consent_id} or " if consent is not None else "")
            + "sound unlike the other clips checked; remove them, or split the dataset by speaker",
            faulty,
        )
    return SpeakerCheck(mean.astype(np.float32), scores, threshold)


def _named(scores: Sequence[SpeakerScore]) -> str:
    shown = ", ".join(s.file_name for s in scores[:MAX_NAMED])
    more = f" and {len(scores) - MAX_NAMED} more" if len(scores) > MAX_NAMED else ""
    return f"clip{'s' if len(scores) > 1 else ''} {shown}{more}"
