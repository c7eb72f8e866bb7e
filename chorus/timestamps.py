"""Word timestamps from per-phoneme alignments (Piper's), in the request's output-sample time.

How: the input text is split into words (``split_words``: whitespace-separated tokens, surrounding punctuation
stripped, tokens of punctuation only dropped). Each word spoken alone gives a reference phoneme sequence (the
backend's ``word_phonemes``, cached per word, built lazily as far as the alignment needs it); the phonemes actually
spoken (the alignments, without "^", "$", spaces and punctuation; a stress mark's time goes to the phoneme after
it, a length or combining mark joins the phoneme before it) are aligned to that reference with
``difflib.SequenceMatcher``. Matched spoken phonemes take the word of their reference phoneme; a stretch spoken
differently between two matched blocks is spread evenly over the reference words between them ("a" alone is "eɪ",
in a sentence "ɐ"); other unmatched ones take the word of the nearest matched phoneme before them (the next one at
the start of a window). Matched blocks that jump far ahead in the reference are dropped unless long (stray matches
of a few common phonemes). A word runs from the start of its first phoneme to the end of its last; a word given no
phoneme gets a zero-length time at the end of the word before it. So espeak's merges and expansions ("of the"
spoken as one word, "$3.50" as five) map back. At ``finish`` the unmatched rest is spread over the rest of the
input, at most twice its length (audio cut short leaves the words after it zero-length at its end).

Incremental, deterministic: one alignment window per segment end (each "$", and the end of each ``feed``), from
the first word not yet final to that end. In a window, every word before the last word that got phonemes is
final; the next window starts at that last word. ``finish`` aligns the rest and makes every word final. Since
windows end at content-determined places, feeding segment by segment gives the same words as feeding everything
at once (for Piper, whose every segment ends with "$").

Limits: times are as fine as the alignments: one Piper frame (256 samples at 22.05 kHz = 11.6 ms). Pauses
(punctuation, spaces, segment ends) belong to no word. Where espeak speaks a word differently in context than
alone, or merges words, the split between neighbouring words is the aligner's guess (usually within a phoneme or
two); a word espeak does not speak at all gets a zero-length time. The last word of a segment becomes final only
when the next segment's alignments arrive (or at ``finish``).
"""

from __future__ import annotations

import difflib
import functools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chorus.models.base import PhonemeAlignment

STRESS_MARKS = frozenset("ˈˌ")
LENGTH_MARKS = frozenset("ːˑ")
MARKERS = frozenset("^$_")  # Piper's BOS, EOS, PAD
KEEP_SYMBOLS = frozenset("%‰#&@")  # punctuation that is spoken: not stripped from a word's edges
MAX_SKIP = 8  # a matched block may jump this many reference phonemes past the spoken ones ...
LONG_BLOCK = 5  # ... or more when it is at least this long


@dataclass(frozen=True, slots=True)
class WordTime:
    """One input word's place in the audio, in samples from the start of the request's audio."""

    word: str
    start_sample: int
    end_sample: int

    def as_json(self, sample_rate: int, offset_s: float = 0.0) -> dict[str, object]:
        return {
            "word": self.word,
            "start_s": round(self.start_sample / sample_rate + offset_s, 3),
            "end_s": round(self.end_sample / sample_rate + offset_s, 3),
        }


def _is_punctuation(c: str) -> bool:
    return unicodedata.category(c).startswith("P") and c not in KEEP_SYMBOLS


def split_words(text: str) -> list[str]:
    """The words WordTimer times, in order: whitespace-separated tokens, surrounding punctuation stripped."""
    words = []
    for token in text.split():
        lo, hi = 0, len(token)
        while lo < hi and _is_punctuation(token[lo]):
            lo += 1
        while hi > lo and _is_punctuation(token[hi - 1]):
            hi -= 1
        if lo < hi:
            words.append(token[lo:hi])
    return words


SEPARATOR, STRESS, JOINS, PHONEME = range(4)


@functools.cache
def _kind(phoneme: str) -> int:
    """What a phoneme is to the aligner: a separator (dropped), a stress mark (its time goes to the next phoneme),
    a length or combining mark (joins the phoneme before it), or a phoneme."""
    if phoneme in MARKERS or phoneme.isspace() or all(unicodedata.category(c).startswith("P") for c in phoneme):
        return SEPARATOR
    if phoneme in STRESS_MARKS:
        return STRESS
    if phoneme in LENGTH_MARKS or all(unicodedata.category(c) == "Mn" for c in phoneme):
        return JOINS
    return PHONEME


def _symbols(phonemes: Sequence[str]) -> list[str]:
    """A reference word's phonemes folded as the spoken ones are: no stress, marks joined to their phoneme."""
    out: list[str] = []
    for p in phonemes:
        kind = _kind(p)
        if kind in (SEPARATOR, STRESS):
            continue
        if kind == JOINS and out:
            out[-1] += p
        else:
            out.append(p)
    return out


def _reach(num_spoken: int) -> int:
    """How far into the reference a window's spoken phonemes may match (more costs time, less is corrected by
    the next window: an unmatched tail stays with the window's last word, which is not final)."""
    return num_spoken + num_spoken // 4 + 16


@dataclass(slots=True)
class _Unit:
    """A spoken phoneme (marks folded in) and its samples."""

    symbol: str
    start: int
    end: int


class WordTimer:
    """Incremental: feed the alignments as they arrive, take the words whose timing is final."""

    def __init__(self, text: str, word_phonemes: Callable[[str], list[str]]) -> None:
        self.words = split_words(text)
        self._word_phonemes = word_phonemes
        self._cache: dict[str, list[str]] = {}
        self._ref: list[str] = []  # reference symbols of words[: len(self._ref_start)]
        self._ref_word: list[int] = []  # the word of each reference symbol
        self._ref_start: list[int] = []  # where each word's symbols begin in self._ref
        self._spoken: list[_Unit] = []
        self._ends: list[int] = []  # where windows end (indices into self._spoken), not yet aligned
        self._marked = 0  # the last window end ever marked
        self._stress_start: int | None = None  # a stress mark's start, waiting for its phoneme
        self._first = 0  # first spoken unit not yet given to a final word
        self._times: list[WordTime] = []  # final words, in order
        self._returned = 0
        self._finished = False

    def feed(self, alignments: Sequence[PhonemeAlignment]) -> None:
        if self._finished:
            raise ValueError("feed after finish")
        for a in alignments:
            p, end = a.phoneme, a.start_sample + a.num_samples
            if p == "$":
                self._mark_end()
            kind = _kind(p)
            if kind == SEPARATOR:
                self._stress_start = None
            elif kind == STRESS:
                if self._stress_start is None:
                    self._stress_start = a.start_sample
            elif kind == JOINS:
                if len(self._spoken) > self._first:  # (nothing to join: dropped)
                    last = self._spoken[-1]
                    last.symbol += p
                    last.end = max(last.end, end)
            else:
                start = a.start_sample if self._stress_start is None else self._stress_start
                self._spoken.append(_Unit(p, start, end))
                self._stress_start = None
        self._mark_end()
        self._advance()

    def ready(self, upto_sample: int | None = None) -> list[WordTime]:
        """Words now final and not yet returned, in order; with upto_sample only those starting before it."""
        hi = len(self._times)
        if upto_sample is not None:
            hi = self._returned
            while hi < len(self._times) and self._times[hi].start_sample < upto_sample:
                hi += 1
        out = self._times[self._returned : hi]
        self._returned = hi
        return out

    def finish(self) -> list[WordTime]:
        """The input is done: every remaining word, final."""
        if not self._finished:
            self._finished = True
            self._advance()
            self._align(len(self._spoken), final=True)
        return self.ready()

    # -- alignment --------------------------------------------------------------------------------

    def _mark_end(self) -> None:
        n = len(self._spoken)
        if n > self._marked:
            self._ends.append(n)
            self._marked = n

    def _advance(self) -> None:
        """One window per segment end, in order: each aligns from the first word not yet final."""
        for end in self._ends:
            if end > self._first:
                self._align(end, final=False)
        self._ends = []

    def _build_ref(self, upto_words: int, upto_symbols: int) -> None:
        while len(self._ref_start) < len(self.words) and (
            len(self._ref_start) < upto_words or len(self._ref) < upto_symbols
        ):
            index = len(self._ref_start)
            word = self.words[index]
            if word not in self._cache:
                self._cache[word] = _symbols(self._word_phonemes(word))
            symbols = self._cache[word]
            self._ref_start.append(len(self._ref))
            self._ref += symbols
            self._ref_word += [index] * len(symbols)

    def _align(self, end: int, *, final: bool) -> None:
        """Align spoken[first:end] from the first word not yet final; make final the words it settles."""
        w = len(self._times)
        if w >= len(self.words):
            self._first = len(self._spoken)
            return
        units = self._spoken[self._first : end]
        if final:
            self._build_ref(len(self.words), 0)
        else:
            self._build_ref(w + 1, 0)
            self._build_ref(0, self._ref_start[w] + _reach(len(units)))
        r = self._ref_start[w]
        hi = len(self._ref) if final else min(len(self._ref), r + _reach(len(units)))
        owners = self._owners([u.symbol for u in units], r, hi, final=final)
        if owners is None:
            owners = [w] * len(units) if final else []
        last = max(owners, default=w)
        if not final and last <= w:
            return
        done = len(self.words) if final else last
        i = 0
        for word in range(w, done):
            j = i
            while j < len(owners) and owners[j] == word:
                j += 1
            previous = self._times[-1].end_sample if self._times else None
            if j > i:
                start = units[i].start if previous is None else max(units[i].start, previous)
                self._times.append(WordTime(self.words[word], start, max(start, units[j - 1].end)))
            else:
                at = previous if previous is not None else (units[j].start if j < len(units) else 0)
                self._times.append(WordTime(self.words[word], at, at))
            i = j
        self._first += len(units) if final else i

    def _owners(self, spoken: list[str], lo: int, hi: int, *, final: bool) -> list[int] | None:
        """The word of each spoken symbol against reference[lo:hi] (None when nothing matches)."""
        matcher = difflib.SequenceMatcher(None, spoken, self._ref[lo:hi], autojunk=False)
        owners: list[int | None] = [None] * len(spoken)
        pi = pj = 0

        def spread(i: int, ref_len: int) -> None:  # spoken[pi:i] over reference[pj:pj + ref_len]
            for k in range(pi, i):
                owners[k] = self._ref_word[lo + pj + (k - pi) * ref_len // (i - pi)]

        for i, j, n in matcher.get_matching_blocks():
            if n == 0 or ((j - pj) - (i - pi) > MAX_SKIP and n < LONG_BLOCK):
                continue  # a stray match far ahead
            if i > pi and j > pj:  # a stretch spoken differently: spread over the reference words between
                spread(i, j - pj)
            for k in range(n):
                owners[i + k] = self._ref_word[lo + j + k]
            pi, pj = i + n, j + n
        if final and pi < len(spoken) and pj < hi - lo:  # the rest of the input: at most twice as long as spoken
            spread(len(spoken), min(hi - lo - pj, 2 * (len(spoken) - pi)))
        first = next((o for o in owners if o is not None), None)
        if first is None:
            return None
        out: list[int] = []
        current = first
        for o in owners:
            current = current if o is None else o
            out.append(current)
        return out


def spread_words(text: str, num_samples: int) -> list[WordTime]:
    """Approximate times for a backend without alignments (Qwen3): the audio spread over the words in proportion
    to their length in characters (plus one for the gap after each). Good to a word or so for even speech;
    pauses at punctuation are not known."""
    words = split_words(text)
    if not words:
        return []
    weights = [len(w) + 1 for w in words]
    total = sum(weights)
    out: list[WordTime] = []
    at = 0.0
    for word, weight in zip(words, weights, strict=True):
        span = num_samples * weight / total
        out.append(WordTime(word, round(at), round(at + span * len(word) / weight)))
        at += span
    return out
