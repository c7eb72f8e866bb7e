"""Challenge phrases and the check that a recording says exactly one.

A phrase is six distinct words drawn with ``secrets`` from a list of 182 common English words that the
recogniser's dictionary knows: 182·181·…·177 ≈ 3.4e13 phrases, so a phrase cannot be guessed and recorded ahead
of time, and each is valid once for a short while (``chorus.consent.service``).

Checking it: pocketsphinx (its bundled en-us acoustic model and dictionary) decodes the recording against a JSGF
grammar that allows, at every position, the expected word or one of several other words of the list. The
recording passes only when the best path is the phrase itself. Free decoding with the general language model
recognises too few words to check a phrase, and spotting or aligning the phrase alone accepts anything close;
a grammar that offers wrong words at every position makes the decoder choose, and a recording of other words
picks other words (``../shared/FACTS.md``; ``chorus bench-consent`` measures it). When no path of the grammar
fits the audio at all, pocketsphinx returns no hypothesis: that is a mismatch too.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

RECOGNISER_RATE = 16_000
PHRASE_WORDS = 6
# Other words offered at each position of the grammar besides the expected one ...
DISTRACTORS_PER_WORD = 12
# ... none of which sounds close to it: each differs from the expected word in at least this fraction of the
# phones (edit distance over the longer pronunciation). Chosen on flite's clear readings of random phrases
# (slt, rms, awb; 2,100 readings, seeds 7 and 8): with any word allowed, 14 were misheard, mostly as a neighbour
# (hollow -> follow, pocket -> bucket, golden -> falcon); with 0.6, 4; with 0.7, 0 of 1,200 (seed 8), and no
# other phrase was accepted. On readings not used for the choice (``chorus bench-consent --phrase-errors 150
# --seed 2027``: three festival and three flite voices, 900 readings) 10 were misheard with any word allowed and
# 3 with 0.7, none falsely accepted by either. Every word keeps at least 122 candidates for its 12 distractors.
DISTRACTOR_APART = 0.7
PAD_S = 0.3
# Pronunciations a checker keeps looked up (the phrase list's and recent transcripts' words).
MAX_REMEMBERED_WORDS = 4096

# Common words with clear, distinct pronunciations, all in pocketsphinx's cmudict-en-us (a test checks);
# near-rhymes of one another (lemon/melon, sailor/tailor, paint/painter) are left out so that a clear reading
# is never a close call.
WORDS: tuple[str, ...] = tuple(
    [
        "apple",
        "river",
        "garden",
        "window",
        "silver",
        "orange",
        "pencil",
        "rocket",
        "candle",
        "forest",
        "yellow",
        "purple",
        "rabbit",
        "turtle",
        "dolphin",
        "tiger",
        "monkey",
        "camel",
        "pepper",
        "butter",
        "honey",
        "carpet",
        "ladder",
        "basket",
        "bucket",
        "hammer",
        "jacket",
        "pocket",
        "ticket",
        "button",
        "mirror",
        "kitten",
        "puppy",
        "spider",
        "lemon",
        "cherry",
        "banana",
        "tomato",
        "potato",
        "carrot",
        "onion",
        "cabbage",
        "cookie",
        "muffin",
        "pizza",
        "noodle",
        "pickle",
        "bottle",
        "kettle",
        "blanket",
        "pillow",
        "circle",
        "triangle",
        "planet",
        "comet",
        "meadow",
        "valley",
        "island",
        "desert",
        "canyon",
        "harbor",
        "castle",
        "tower",
        "bridge",
        "tunnel",
        "village",
        "market",
        "station",
        "airport",
        "chimney",
        "cottage",
        "cabin",
        "palace",
        "temple",
        "museum",
        "violin",
        "guitar",
        "piano",
        "trumpet",
        "drummer",
        "dancer",
        "painter",
        "farmer",
        "sailor",
        "pilot",
        "doctor",
        "lawyer",
        "winter",
        "summer",
        "autumn",
        "morning",
        "evening",
        "sunset",
        "thunder",
        "rainbow",
        "blizzard",
        "breeze",
        "shadow",
        "marble",
        "copper",
        "iron",
        "crystal",
        "velvet",
        "cotton",
        "leather",
        "paper",
        "plastic",
        "rubber",
        "wooden",
        "golden",
        "frozen",
        "gentle",
        "quiet",
        "happy",
        "lucky",
        "clever",
        "brave",
        "honest",
        "simple",
        "narrow",
        "hollow",
        "heavy",
        "little",
        "giant",
        "tiny",
        "crimson",
        "scarlet",
        "ivory",
        "travel",
        "whisper",
        "gather",
        "follow",
        "borrow",
        "carry",
        "listen",
        "wander",
        "build",
        "climb",
        "swim",
        "seven",
        "eleven",
        "twelve",
        "twenty",
        "forty",
        "ninety",
        "hundred",
        "elephant",
        "giraffe",
        "penguin",
        "lobster",
        "oyster",
        "squirrel",
        "beaver",
        "badger",
        "falcon",
        "pelican",
        "parrot",
        "sparrow",
        "engine",
        "wagon",
        "tractor",
        "bicycle",
        "scooter",
        "helmet",
        "compass",
        "anchor",
        "lantern",
        "magnet",
        "battery",
        "saddle",
        "pumpkin",
        "walnut",
        "peanut",
        "almond",
        "coconut",
        "garlic",
        "ginger",
        "mustard",
        "vinegar",
        "yogurt",
        "pancake",
        "waffle",
    ]
)


def new_phrase(words: int = PHRASE_WORDS, *, rng: random.Random | None = None) -> str:
    """A fresh random phrase (distinct words), from the operating system's CSPRNG (``rng``: a seeded one, for
    benchmarks that must be repeatable)."""
    pool = list(WORDS)
    picked: list[str] = []
    for _ in range(words):
        index = rng.randrange(len(pool)) if rng is not None else secrets.randbelow(len(pool))
        picked.append(pool.pop(index))
    return " ".join(picked)


Pronunciations = tuple[tuple[str, ...], ...]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two sequences (phones here; words for the quality gate's WER)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def apart_share(word: Pronunciations, other: Pronunciations) -> float:
    """The least share of phones in which a pronunciation of ``other`` differs from one of ``word`` (edits over
    the longer of the two; 1.0 when either has none): 0.4 for pocket (P AA K AH T) and bucket (B AH K AH T)."""
    return min((edit_distance(a, b) / max(len(a), len(b)) for a in word for b in other), default=1.0)


Ranked = Callable[[str], Sequence[tuple[float, str]]]


def grammar(phrase: str, ranked: Ranked, *, seed: int = 0, distractor_apart: float = DISTRACTOR_APART) -> str:
    """The JSGF grammar a recording of ``phrase`` is decoded with: at each position the expected word or one of
    ``DISTRACTORS_PER_WORD`` others, chosen from the list by ``seed``, never another word of the phrase and never
    one that sounds close to the expected word (``apart_share`` under ``distractor_apart``; 0 allows any).
    ``ranked(word)``: every other listed word with its ``apart_share`` from ``word``, farthest first. When too
    few are apart (a long transcript of the list's own words, in the dataset check), the farthest ones serve."""
    expected = phrase.split()
    rng = random.Random(seed)
    slots = []
    for word in expected:
        candidates = [(share, w) for share, w in ranked(word) if w not in expected]
        others = [w for share, w in candidates if share >= distractor_apart]
        if len(others) < DISTRACTORS_PER_WORD:
            others = [w for _, w in candidates[:DISTRACTORS_PER_WORD]]
        choices = [word, *rng.sample(others, DISTRACTORS_PER_WORD)]
        slots.append("( " + " | ".join(choices) + " )")
    return "#JSGF V1.0;\ngrammar consent;\npublic <phrase> = " + " ".join(slots) + " ;\n"


@dataclass(frozen=True)
class PhraseCheck:
    """What the recogniser heard (empty when no path of the grammar fitted) and whether it is the phrase."""

    heard: str
    matches: bool


class PhraseChecker:
    """Checks recordings against phrases; one decode at a time (pocketsphinx's decoder is not thread-safe)."""

    def __init__(self, *, distractor_apart: float = DISTRACTOR_APART) -> None:
        self._decoder: Any = None
        self._lock = threading.Lock()
        self._pronunciations: dict[str, Pronunciations] = {}
        self._rankings: dict[str, tuple[tuple[float, str], ...]] = {}
        self.distractor_apart = distractor_apart

    def check(self, audio: np.ndarray, sample_rate: int, phrase: str, *, seed: int = 0) -> PhraseCheck:
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        if sample_rate != RECOGNISER_RATE:
            x = soxr.resample(x, sample_rate, RECOGNISER_RATE, quality="HQ")
        # Silence either side: the decoder needs to see the last word end (a clip cut right after it otherwise
        # ends the search before the grammar's final state).
        pad = np.zeros(int(PAD_S * RECOGNISER_RATE))
        x = np.concatenate([pad, x, pad])
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        with self._lock:
            decoder = self._load()
            decoder.add_jsgf_string("consent", self._grammar(phrase, seed))
            decoder.activate_search("consent")
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        heard = " ".join(str(hypothesis.hypstr).split()) if hypothesis is not None else ""
        return PhraseCheck(heard=heard, matches=heard == " ".join(phrase.split()))

    def grammar(self, phrase: str, *, seed: int = 0) -> str:
        """The grammar ``check`` decodes a recording of ``phrase`` with."""
        with self._lock:
            return self._grammar(phrase, seed)

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def _grammar(self, phrase: str, seed: int) -> str:
        return grammar(phrase, self._ranked, seed=seed, distractor_apart=self.distractor_apart)

    def _ranked(self, word: str) -> tuple[tuple[float, str], ...]:
        """Every other listed word with its ``apart_share`` from ``word``, farthest first (ties in list order);
        caller holds the lock."""
        known = self._rankings.get(word)
        if known is None:
            said = self._pronounce(word)
            shares = [(apart_share(said, self._pronounce(w)), w) for w in WORDS if w != word]
            known = self._rankings[word] = tuple(sorted(shares, key=lambda pair: -pair[0]))
            if len(self._rankings) > MAX_REMEMBERED_WORDS:  # transcripts bring any words
                self._rankings.clear()
        return known

    def _pronounce(self, word: str) -> Pronunciations:
        """Every pronunciation of ``word`` in the decoder's dictionary (``word``, ``word(2)``, …); caller holds
        the lock. A word the dictionary lacks has none, so it is apart from every word."""
        known = self._pronunciations.get(word)
        if known is None:
            decoder = self._load()
            found: list[tuple[str, ...]] = []
            while (phones := decoder.lookup_word(word if not found else f"{word}({len(found) + 1})")) is not None:
                found.append(tuple(phones.split()))
            known = self._pronunciations[word] = tuple(found)
            if len(self._pronunciations) > MAX_REMEMBERED_WORDS:  # transcripts bring any words
                self._pronunciations.clear()
        return known

    def _load(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(loglevel="FATAL")  # the bundled en-us acoustic model and dictionary
        return self._decoder
