"""Challenge phrases and the recogniser that checks them (chorus.consent.phrases), on real English speech."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest

from chorus.consent.phrases import (
    DISTRACTOR_APART,
    PHRASE_WORDS,
    WORDS,
    PhraseChecker,
    apart_share,
    new_phrase,
)
from tests.voices.speech import flite_speak


@pytest.fixture(scope="module")
def checker() -> PhraseChecker:
    return PhraseChecker()


def test_every_word_is_in_the_recognisers_dictionary() -> None:
    import pocketsphinx

    path = os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")
    with open(path, encoding="utf-8") as f:
        known = {line.split()[0].split("(")[0] for line in f if line.strip()}
    assert set(WORDS) <= known and len(set(WORDS)) == len(WORDS) >= 150


def test_phrases_are_distinct_random_words() -> None:
    phrases = {new_phrase() for _ in range(200)}
    assert len(phrases) == 200
    for phrase in phrases:
        words = phrase.split()
        assert len(words) == PHRASE_WORDS and len(set(words)) == PHRASE_WORDS and set(words) <= set(WORDS)
    assert new_phrase(rng=random.Random(1)) == new_phrase(rng=random.Random(1))


def slots_of(grammar: str) -> list[list[str]]:
    """The words a grammar offers at each position, the expected one first."""
    return [slot.strip("( )").split(" | ") for slot in grammar.split("=", 1)[1].strip(" ;\n").split(") (")]


def test_the_grammar_offers_other_words_at_every_position_but_never_the_phrases_own(checker: PhraseChecker) -> None:
    phrase = new_phrase(rng=random.Random(3))
    slots = slots_of(checker.grammar(phrase))
    assert len(slots) == PHRASE_WORDS
    said = checker._pronounce
    for word, choices in zip(phrase.split(), slots, strict=True):
        assert choices[0] == word and len(set(choices)) == len(choices) > 10
        assert not set(choices[1:]) & set(phrase.split())
        assert all(apart_share(said(word), said(other)) >= DISTRACTOR_APART for other in choices[1:])


def test_no_distractor_sounds_close_to_the_expected_word() -> None:
    checker, anything = PhraseChecker(), PhraseChecker(distractor_apart=0.0)
    said = checker._pronounce
    assert said("pocket") == (("P", "AA", "K", "AH", "T"),)
    assert said("bucket") == (("B", "AH", "K", "AH", "T"), ("B", "AH", "K", "IH", "T"))  # every pronunciation
    assert said("xqzzy") == ()  # not in the dictionary: apart from every word
    # pocket -> bucket: 2 of 5 phones differ in the first (3 in the second); pocket -> apple (AE P AH L): 4 of 5.
    assert apart_share(said("pocket"), said("bucket")) == 0.4 and apart_share(said("pocket"), said("apple")) == 0.8
    assert apart_share(said("xqzzy"), said("apple")) == 1.0
    # "follow" (1 phone from "hollow") was a distractor of "hollow" under some seeds, and is never now.
    slot = re.compile(r"\( hollow \| ([^)]*)\)")

    def offered(by: PhraseChecker, seed: int) -> list[str]:
        match = slot.search(by.grammar("hollow apple river", seed=seed))
        assert match is not None
        return match.group(1).strip().split(" | ")

    assert any("follow" in offered(anything, seed) for seed in range(40))
    assert not any("follow" in offered(checker, seed) for seed in range(40))
    assert all(len(set(offered(checker, seed))) == 12 for seed in range(5))
    # A transcript of the list's own words (the dataset check decodes transcripts with this grammar) still gets
    # 12 distractors at every word, the farthest left when too few are apart.
    crowded = [*WORDS[:168], "hollow"]  # 14 words left to offer; 49 of these have fewer than 12 of them apart
    slots = slots_of(checker.grammar(" ".join(crowded)))
    assert [choices[0] for choices in slots] == crowded
    assert all(len(set(choices)) == 13 for choices in slots)


@pytest.mark.parametrize("voice", ["slt", "rms", "awb"])
def test_the_phrase_is_heard_and_another_phrase_is_not(checker: PhraseChecker, voice: str) -> None:
    rng = random.Random(voice)
    for _ in range(2):
        phrase, other = new_phrase(rng=rng), new_phrase(rng=rng)
        said, rate = flite_speak(phrase, voice)
        heard = checker.check(said, rate, phrase)
        assert heard.matches and heard.heard == phrase
        wrong, rate = flite_speak(other, voice)
        assert not checker.check(wrong, rate, phrase).matches
        # Half the phrase, then silence, is not the phrase either.
        half, rate = flite_speak(" ".join(phrase.split()[:3]), voice)
        assert not checker.check(half, rate, phrase).matches


def test_silence_and_noise_are_not_the_phrase(checker: PhraseChecker) -> None:
    phrase = new_phrase(rng=random.Random(5))
    assert checker.check(np.zeros(48_000, np.float32), 16_000, phrase).matches is False
    noise = np.random.default_rng(0).standard_normal(48_000).astype(np.float32) * 0.1
    assert checker.check(noise, 16_000, phrase).matches is False
