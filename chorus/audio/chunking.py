"""Splitting long token sequences (phonemes, characters) into segments at word boundaries.

Pure functions. A segment is decoded on its own, so cuts go where a speaker pauses: after a
clause mark when one is near, else at a word boundary, never inside a word.
"""

from __future__ import annotations

from collections.abc import Sequence

CLAUSE_MARKS = frozenset(",;:—–")
SPACE = " "


def _cut_point(tokens: Sequence[str], max_len: int, min_len: int) -> int:
    """Index just after the best word boundary in tokens[:max_len] (0 when there is none)."""
    limit = min(max_len, len(tokens) - 1)
    best_space = 0
    for i in range(limit, min_len - 1, -1):
        if tokens[i] != SPACE:
            continue
        if i > 0 and tokens[i - 1] in CLAUSE_MARKS:
            return i + 1
        if best_space == 0:
            best_space = i + 1
    return best_space


def split_tokens(tokens: Sequence[str], max_len: int, min_len: int | None = None) -> list[list[str]]:
    """Split ``tokens`` into pieces of at most ``max_len`` tokens, cutting at spaces.

    A run with no space in reach (one very long word) is cut hard at ``max_len``: nothing is dropped.
    Joining the pieces gives the input back.
    """
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    floor = max(1, max_len // 3) if min_len is None else min_len
    pieces: list[list[str]] = []
    rest = list(tokens)
    while len(rest) > max_len:
        cut = _cut_point(rest, max_len, floor) or max_len
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def segment_sentences(sentences: Sequence[Sequence[str]], *, first_max: int, max_len: int) -> list[list[str]]:
    """Segments for a whole text: the first kept short (fast first audio), every other ≤ ``max_len``."""
    segments: list[list[str]] = []
    for sentence in sentences:
        if not sentence:
            continue
        if not segments and len(sentence) > first_max:
            head, *_ = split_tokens(sentence, first_max)
            segments.append(head)
            sentence = sentence[len(head) :]
            if not sentence:
                continue
        segments.extend(split_tokens(sentence, max_len))
    return segments
