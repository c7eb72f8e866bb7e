"""Does a clip say its transcript? The offline recogniser's answer, for a bounded sample of a dataset's clips.

Free decoding with pocketsphinx's general language model hears too few words to judge a transcript (see
``chorus.consent.phrases``), so each clip is decoded with the grammar the consent check uses, built from the
clip's own transcript: at every word, the transcript's word or one of several unrelated words. A clip that says
its transcript comes out as the transcript (word error rate 0-0.07 on flite's voices reading 15-word
sentences); a clip that says other words picks the other words (0.6-1.0), or fits no path at all (1.0). Word
error rate here counts the positions where the recogniser chose another word than the transcript's.

Bounds: the recogniser knows US English and its dictionary's words only; a transcript with other words (digits,
names it lacks) is not checked, and says so. Each check costs about 5 % of the clip's duration on one core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from chorus.consent.phrases import PhraseChecker

# Above this word error rate a clip's transcript is taken not to be what it says.
MAX_WER = 0.3
# Longer transcripts are not checked (the grammar, and the search, grow with them).
MAX_WORDS = 80
_NOT_LETTERS = re.compile(r"[^a-z']+")

TranscriptStatus = Literal["ok", "mismatch", "unchecked"]


@dataclass(frozen=True, slots=True)
class TranscriptCheck:
    status: TranscriptStatus
    wer: float | None = None
    heard: str | None = None
    reason: str | None = None  # why it was not checked

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status}
        if self.status == "unchecked":
            body["reason"] = self.reason
        else:
            body.update(wer=self.wer, heard=self.heard)
        return body


def transcript_words(text: str) -> list[str]:
    """Lower-case words as the recogniser's dictionary spells them (apostrophes kept, other marks dropped)."""
    return [w.strip("'") for w in _NOT_LETTERS.split(text.lower().replace("-", " ")) if w.strip("'")]


class TranscriptChecker(PhraseChecker):
    """The consent recogniser, asked about transcripts; one decode at a time (its own decoder)."""

    def unknown_words(self, words: list[str]) -> list[str]:
        with self._lock:
            decoder = self._load()
            return [w for w in words if decoder.lookup_word(w) is None]

    def check_transcript(self, audio: np.ndarray, sample_rate: int, text: str) -> TranscriptCheck:
        if any(c.isdigit() for c in text):
            return TranscriptCheck("unchecked", reason="digits (write numbers as words to have them checked)")
        words = transcript_words(text)
        if not words:
            return TranscriptCheck("unchecked", reason="no words")
        if len(words) > MAX_WORDS:
            return TranscriptCheck("unchecked", reason=f"over {MAX_WORDS} words")
        unknown = self.unknown_words(words)
        if unknown:
            return TranscriptCheck("unchecked", reason=f"words the recogniser does not know: {', '.join(unknown[:5])}")
        heard = self.check(audio, sample_rate, " ".join(words)).heard.split()
        wrong = sum(h != w for h, w in zip(heard, words, strict=False)) + abs(len(words) - len(heard))
        wer = round(min(1.0, wrong / len(words)), 3)
        return TranscriptCheck("ok" if wer <= MAX_WER else "mismatch", wer=wer, heard=" ".join(heard))
