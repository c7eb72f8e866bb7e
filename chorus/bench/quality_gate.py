"""The audio-quality gate a lossy speed-up (int8 weights, bf16, fewer decoder context frames, …) must pass
before it may be offered: the candidate's renderings of held-out sentences against the exact model's.

Per sentence (chorus.bench.quality_metrics for the definitions):

* mel-cepstral distortion (dB) of candidate against reference;
* speaker similarity: cosine of the two renderings' GE2E embeddings (chorus.voices.embedding);
* words: one recogniser (chorus.bench.quality_asr) transcribes both; each is scored against the sentence text.

The gate passes when every bound of ``GateBounds`` holds over the whole set: mean and 95th-percentile MCD,
mean and minimum similarity, and the rise of the corpus word error rate from reference to candidate.
``gate()`` is backend-agnostic (lists of audio at one sample rate); ``Scorer`` lets a benchmark analyse the
reference once and compare several candidates with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from chorus.bench.quality_asr import Recogniser
from chorus.bench.quality_metrics import Cepstra, frame_distances, mel_cepstra, normalise_words, word_errors
from chorus.voices.embedding import SpeakerEncoder


@dataclass(frozen=True, slots=True)
class GateBounds:
    """What a candidate may lose against the reference.

    Fixed before any int8 rendering was scored, from the float bundled Piper voice on the 50 gate sentences
    (``chorus bench-quality --yardstick``): two noise seeds of the float voice (noise scale 0.667, durations
    fixed) differ by MCD 2.06 dB mean / 2.19 p95 / 1.77 at the least, similarity 0.990 mean / 0.977 min, WER
    16.4 % vs 15.1 %; 8 decoder context frames instead of 16 differ by MCD 0.0007 dB mean. A candidate must stay
    well inside the model's own sampling noise: mean MCD at most half the seed-to-seed mean, p95 under the
    least-different seed pair, similarity above the seed pairs' (with a margin for the minimum), and no more
    words lost than the ~1.3-point WER wobble between two seeds plus a little (2 points ≈ 12 of ~620 words).
    """

    max_mean_mcd_db: float = 1.0
    max_p95_mcd_db: float = 1.5
    min_mean_similarity: float = 0.98
    min_similarity: float = 0.95
    max_wer_increase: float = 0.02  # absolute: 0.02 = two percentage points
    min_sentences: int = 50


DEFAULT_BOUNDS = GateBounds()


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the gate needs of one rendering: its mel-cepstra, its speaker embedding, its transcript."""

    cepstra: Cepstra
    embedding: np.ndarray
    transcript: str


@dataclass(frozen=True, slots=True)
class SentenceScore:
    text: str
    mcd_db: float
    similarity: float
    num_words: int
    reference_errors: int
    candidate_errors: int
    reference_transcript: str
    candidate_transcript: str


@dataclass(frozen=True, slots=True)
class Check:
    """One bound against its measured value: ``value <= bound`` (``is_upper``) or ``value >= bound``."""

    name: str
    value: float
    bound: float
    is_upper: bool

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.bound) if self.is_upper else bool(self.value >= self.bound)


@dataclass(frozen=True)
class GateReport:
    """The scores of every sentence, the bounds, and the figures the bounds are checked on."""

    sentences: tuple[SentenceScore, ...]
    bounds: GateBounds
    meta: dict[str, Any] = field(default_factory=dict)

    def _values(self, name: str) -> np.ndarray:
        if not self.sentences:
            raise ValueError("the report has no sentences")
        return np.asarray([getattr(s, name) for s in self.sentences], dtype=np.float64)

    @property
    def mean_mcd_db(self) -> float:
        return float(np.mean(self._values("mcd_db")))

    @property
    def p95_mcd_db(self) -> float:
        return float(np.percentile(self._values("mcd_db"), 95))

    @property
    def max_mcd_db(self) -> float:
        return float(np.max(self._values("mcd_db")))

    @property
    def mean_similarity(self) -> float:
        return float(np.mean(self._values("similarity")))

    @property
    def min_similarity(self) -> float:
        return float(np.min(self._values("similarity")))

    @property
    def reference_wer(self) -> float:
        return float(self._values("reference_errors").sum() / max(1.0, self._values("num_words").sum()))

    @property
    def candidate_wer(self) -> float:
        return float(self._values("candidate_errors").sum() / max(1.0, self._values("num_words").sum()))

    @property
    def wer_increase(self) -> float:
        return self.candidate_wer - self.reference_wer

    def checks(self) -> list[Check]:
        b = self.bounds
        return [
            Check("sentences", float(len(self.sentences)), float(b.min_sentences), is_upper=False),
            Check("mean MCD (dB)", self.mean_mcd_db, b.max_mean_mcd_db, is_upper=True),
            Check("p95 MCD (dB)", self.p95_mcd_db, b.max_p95_mcd_db, is_upper=True),
            Check("mean speaker similarity", self.mean_similarity, b.min_mean_similarity, is_upper=False),
            Check("min speaker similarity", self.min_similarity, b.min_similarity, is_upper=False),
            Check("WER increase (abs.)", self.wer_increase, b.max_wer_increase, is_upper=True),
        ]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks())

    def summary(self) -> dict[str, float]:
        return {
            "mean_mcd_db": self.mean_mcd_db,
            "p95_mcd_db": self.p95_mcd_db,
            "max_mcd_db": self.max_mcd_db,
            "mean_similarity": self.mean_similarity,
            "min_similarity": self.min_similarity,
            "reference_wer": self.reference_wer,
            "candidate_wer": self.candidate_wer,
            "wer_increase": self.wer_increase,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary(),
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks()],
            "bounds": asdict(self.bounds),
            "meta": self.meta,
            "sentences": [asdict(s) for s in self.sentences],
        }


class Scorer:
    """Analyses renderings (mel-cepstra, GE2E embedding, transcript) and scores candidate against reference."""

    def __init__(self, recogniser: Recogniser | None = None, encoder: SpeakerEncoder | None = None) -> None:
        self.recogniser = recogniser or Recogniser()
        self.encoder = encoder or SpeakerEncoder()

    def analyse(self, audio: Sequence[np.ndarray], sample_rate: int) -> list[Analysis]:
        return [
            Analysis(
                mel_cepstra(a, sample_rate),
                self.encoder.embed(a, sample_rate),
                self.recogniser.transcribe(a, sample_rate),
            )
            for a in audio
        ]

    @staticmethod
    def score(
        reference: Sequence[Analysis], candidate: Sequence[Analysis], texts: Sequence[str]
    ) -> list[SentenceScore]:
        if not len(reference) == len(candidate) == len(texts):
            raise ValueError(f"{len(reference)} references, {len(candidate)} candidates, {len(texts)} texts")
        scores: list[SentenceScore] = []
        for ref, cand, text in zip(reference, candidate, texts, strict=True):
            words = normalise_words(text)
            scores.append(
                SentenceScore(
                    text=text,
                    mcd_db=_mcd(ref.cepstra, cand.cepstra),
                    similarity=SpeakerEncoder.similarity(ref.embedding, cand.embedding),
                    num_words=len(words),
                    reference_errors=word_errors(words, normalise_words(ref.transcript)),
                    candidate_errors=word_errors(words, normalise_words(cand.transcript)),
                    reference_transcript=ref.transcript,
                    candidate_transcript=cand.transcript,
                )
            )
        return scores


def _mcd(reference: Cepstra, candidate: Cepstra) -> float:
    try:
        return float(np.mean(frame_distances(reference, candidate)))
    except ValueError:  # durations more than a factor of two apart: no alignment, and surely not the same speech
        return float("inf")


def gate(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    texts: Sequence[str],
    sample_rate: int,
    bounds: GateBounds = DEFAULT_BOUNDS,
    *,
    scorer: Scorer | None = None,
    meta: dict[str, Any] | None = None,
) -> GateReport:
    """Score ``candidate`` renderings against ``reference`` renderings of the same ``texts`` (mono float audio,
    one per text, all at ``sample_rate``) and check them against ``bounds``."""
    scorer = scorer or Scorer()
    scores = scorer.score(scorer.analyse(reference, sample_rate), scorer.analyse(candidate, sample_rate), texts)
    return GateReport(tuple(scores), bounds, dict(meta or {}))
