from __future__ import annotations

import functools
import operator

import pytest

from chorus.audio.chunking import segment_sentences, split_tokens


def tokens(text: str) -> list[str]:
    return list(text)


def test_pieces_join_back_and_respect_the_limit() -> None:
    text = tokens("the quick brown fox jumps over the lazy dog and keeps on running far away")
    pieces = split_tokens(text, 20)
    assert ["".join(p) for p in pieces] and functools.reduce(operator.iadd, pieces, []) == text
    assert all(len(p) <= 20 for p in pieces)
    assert all(p[-1] == " " for p in pieces[:-1])  # cut after a space, never inside a word


def test_prefers_a_clause_mark_over_the_last_space() -> None:
    pieces = split_tokens(tokens("hello there, my good friend of old"), 30)
    assert "".join(pieces[0]) == "hello there, "


def test_one_long_word_is_cut_hard_but_nothing_is_lost() -> None:
    word = tokens("x" * 50)
    pieces = split_tokens(word, 20)
    assert [len(p) for p in pieces] == [20, 20, 10]


def test_first_segment_is_short_and_every_sentence_is_kept() -> None:
    first = tokens("this first sentence is rather long and goes on for quite a while indeed.")
    second = tokens("short.")
    long_one = tokens("word " * 80)
    segments = segment_sentences([first, second, long_one], first_max=24, max_len=100)
    assert len(segments[0]) <= 24
    assert functools.reduce(operator.iadd, segments, []) == first + second + long_one
    assert all(len(s) <= 100 for s in segments)


def test_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError):
        split_tokens(tokens("abc"), 0)
