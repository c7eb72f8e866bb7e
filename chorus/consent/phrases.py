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
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

RECOGNISER_RATE = 16_000
PHRASE_WORDS = 6
# Other words offered at each position of the grammar besides the expected one.
DISTRACTORS_PER_WORD = 12
PAD_S = 0.3

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


def grammar(phrase: str, *, seed: int = 0) -> str:
    """The JSGF grammar a recording of ``phrase`` is decoded with: at each position the expected word or one of
    ``DISTRACTORS_PER_WORD`` others (chosen from the list by ``seed``, never another word of the phrase)."""
    expected = phrase.split()
    rng = random.Random(seed)
    others = [w for w in WORDS if w not in expected]
    slots = []
    for word in expected:
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

    def __init__(self) -> None:
        self._decoder: Any = None
        self._lock = threading.Lock()

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
            decoder.add_jsgf_string("consent", grammar(phrase, seed=seed))
            decoder.activate_search("consent")
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        heard = " ".join(str(hypothesis.hypstr).split()) if hypothesis is not None else ""
        return PhraseCheck(heard=heard, matches=heard == " ".join(phrase.split()))

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def _load(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(loglevel="FATAL")  # the bundled en-us acoustic model and dictionary
        return self._decoder
