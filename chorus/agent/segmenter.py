"""Cut text that arrives as LLM fragments into segments ready to be spoken.

Fragments ("Hel", "lo", " wor", "ld.", ...) are buffered; a segment is cut only just before whitespace (or at the
end of the text so far), so a word is never split, and a cut is decided once the text after it is known (but see
``eager_first``):

* Sentence end: ``.`` ``!`` ``?`` ``…`` (a run of them, then any closing quotes/brackets) followed by whitespace.
  Not an end: a ``.`` after a title or initial (``Mr.``, ``Dr.``, ``vs.``, ``e.g.``, ``J. R. R. Tolkien``); a ``.``
  after another abbreviation (``etc.``, ``p.m.``, ``U.S.``, ``Inc.``, ``No.``, ``Jan.``) unless the next word starts
  with a capital letter; an ellipsis (``...``/``…``) followed by a lowercase word. Decimals, thousands, times,
  versions and URLs ("3.50", "1,000", "3:30", "v1.2.3", "example.com") have no whitespace after the mark.
* Clause mark ``,`` ``;`` ``:`` ``—`` ``–`` followed by whitespace: a cut once the segment has ``first_min_words``
  words (the first segment of an utterance, to start speaking early) or ``min_words`` (later segments).
* No usable punctuation: a cut after ``max_words`` complete words (backing off so that no segment ends on a title
  or initial).
* The first segment of an utterance, eagerly (``eager_first``): cut as soon as the fragment that ends it arrives
  when that is certain without the next character (a plain word with a sentence end that is no abbreviation,
  "today."; or with a clause mark once it has ``first_min_words`` words, "warm,"). First audio comes one token
  sooner; the price: a closing quote or a second mark right after it starts the next segment.
* Idle (``idle_s`` since the last fragment): every complete word buffered is spoken, however few (the LLM stalled;
  waiting longer only adds silence). A trailing partial word stays, unless it is a plain word that ends a sentence
  ("world.", "why?"), not an abbreviation, a number ("$3." may become "$3.50") or part of a URL ("example.").
  The trade-off: a closing quote or second mark arriving more than ``idle_s`` later starts the next segment.

A "word" is a run of non-whitespace. Segments come back with whitespace runs (newlines too) collapsed to one
space and stripped; nothing else in the text is changed. Pure: no I/O, no threads; the caller passes the time in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_SENTENCE_END = ".!?…"
_CLAUSE = ",;:—–"
_CLOSERS = "\"'”’)]}»"
_OPENERS = "\"'“‘([{«"
_COMPLETE_WORD = re.compile(r"\S+(?=\s)")
_NON_SPACE = re.compile(r"\S")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S, a.m, p.m (the final dot already removed)

# Never end a sentence: what follows is a name or an example.
_HARD = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "cf", "e.g", "i.e"}
    | {"mt", "gen", "gov", "sen", "rep", "capt", "lt", "col", "sgt", "rev", "hon"}
)
# End a sentence only when the next word is capitalised ("at 3 p.m. See you" vs "3 p.m. tomorrow").
_SOFT = frozenset(
    {"sr", "jr", "etc", "inc", "ltd", "co", "corp", "no", "approx", "dept", "est", "fig", "vol", "ave"}
    | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
)

_Decision = Literal["cut", "keep", "wait"]


@dataclass(frozen=True)
class SegmenterConfig:
    first_min_words: int = 3  # the first segment of an utterance may be cut at a clause mark with this many words
    min_words: int = 6  # later segments: cut at a clause mark only with at least this many words
    max_words: int = 20  # no punctuation in sight: cut after this many complete words
    idle_s: float = 0.5  # no new text for this long: speak the complete words buffered
    # An utterance's first segment is cut as soon as its last fragment ends it ("today." / "warm,": a plain word
    # and the mark), not when the next fragment's space arrives: first audio one token sooner.
    eager_first: bool = True

    def __post_init__(self) -> None:
        if min(self.first_min_words, self.min_words, self.max_words) < 1 or self.idle_s <= 0:
            raise ValueError("word counts must be >= 1 and idle_s > 0")


def _abbreviation(word: str) -> Literal["hard", "soft"] | None:
    """The kind of abbreviation ``word`` (its final dot removed) is, if any."""
    if word.lower() in _HARD or (len(word) == 1 and word.isupper() and word != "I"):
        return "hard"
    if word.lower() in _SOFT or _DOTTED.fullmatch(word):
        return "soft"
    return None


def _split_end(token: str) -> tuple[str, str]:
    """(the token before its sentence-end run, the run), closing quotes/brackets ignored."""
    core = token.rstrip(_CLOSERS)
    body = core.rstrip(_SENTENCE_END)
    return body.lstrip(_OPENERS), core[len(body) :]


def _is_ellipsis(run: str) -> bool:
    return "…" in run or ".." in run


def _is_sticky(token: str) -> bool:
    """A title or initial ("Dr.", "J."): a segment never ends on one."""
    word, run = _split_end(token)
    return run == "." and _abbreviation(word) == "hard"


def _tail_ends_sentence(token: str) -> bool:
    """Whether a trailing token, nothing after it yet, ends a sentence: a plain word then the mark ("world.").

    Not "$3." (a decimal?), "e." (e.g.?), "Dr.", "etc.", nor "example." or "docs?" inside a URL or address.
    """
    word, run = _split_end(token)
    plain = len(word) > 1 and word.replace("'", "").replace("-", "").isalpha()
    return bool(run) and plain and (run != "." or _abbreviation(word) is None)


class TextSegmenter:
    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self._config = config or SegmenterConfig()
        self._buf = ""
        self._first = True
        self._last_append: float | None = None

    @property
    def buffered(self) -> str:
        return self._buf

    def append(self, text: str, now: float) -> list[str]:
        """Add a fragment; the segments now ready, in order."""
        self._buf += text
        self._last_append = now
        ready: list[str] = []
        while (cut := self._next_cut()) is not None:
            ready += self._take(cut)
        if self._first and self._config.eager_first and self._ends_first_segment():
            ready += self._take(len(self._buf))
        return ready

    def _ends_first_segment(self) -> bool:
        """The buffer's last token surely ends the utterance's first segment, whatever comes next: a plain word
        with a sentence end that is no abbreviation ("today."), or with a clause mark once enough words came."""
        if not self._buf or self._buf[-1].isspace():
            return False
        tokens = self._buf.split()
        if _tail_ends_sentence(tokens[-1]):
            return True
        core = tokens[-1].rstrip(_CLOSERS)
        word = core[:-1].lstrip(_OPENERS)
        plain = len(word) > 1 and word.replace("'", "").replace("-", "").isalpha()
        return core[-1:] in _CLAUSE and plain and len(tokens) >= self._config.first_min_words

    def due(self, now: float) -> list[str]:
        """The segment ready because no text came for ``idle_s`` (none before then)."""
        cut = self._idle_cut()
        if cut is None or self._last_append is None or now < self._last_append + self._config.idle_s:
            return []
        return self._take(cut)

    def next_due_at(self) -> float | None:
        """When ``due`` could next return something; None when it could not before the next fragment."""
        if self._last_append is None or self._idle_cut() is None:
            return None
        return self._last_append + self._config.idle_s

    def flush(self) -> str | None:
        """Everything buffered, as one segment (None if only whitespace)."""
        taken = self._take(len(self._buf))
        return taken[0] if taken else None

    def clear(self) -> None:
        """Drop the buffer (barge-in)."""
        self._buf = ""

    def start_utterance(self) -> None:
        """The next segment is again the first of an utterance (the low clause-mark threshold applies)."""
        self._first = True

    def _take(self, cut: int) -> list[str]:
        segment = " ".join(self._buf[:cut].split())
        self._buf = self._buf[cut:].lstrip()
        if not segment:
            return []
        self._first = False
        return [segment]

    def _next_char(self, pos: int) -> str | None:
        match = _NON_SPACE.search(self._buf, pos)
        return match.group() if match else None

    def _next_cut(self) -> int | None:
        """Where the next segment ends (just before whitespace), or None if not known yet."""
        words: list[re.Match[str]] = []
        for match in _COMPLETE_WORD.finditer(self._buf):
            words.append(match)
            decision = self._boundary(match.group(), match.end(), len(words))
            if decision == "wait":
                return None  # only whitespace after it so far
            if decision == "cut":
                return match.end()
            if len(words) >= self._config.max_words:
                return next((w.end() for w in reversed(words) if not _is_sticky(w.group())), match.end())
        return None

    def _boundary(self, token: str, end: int, count: int) -> _Decision:
        """Whether the segment may end after ``token`` (its ``count``-th word, followed by whitespace at ``end``)."""
        word, run = _split_end(token)
        if run:
            if _is_ellipsis(run) or (run == "." and _abbreviation(word) == "soft"):
                nxt = self._next_char(end)
                if nxt is None:
                    return "wait"
                if _is_ellipsis(run):
                    return "keep" if nxt.islower() else "cut"
                return "cut" if nxt.isupper() else "keep"
            return "keep" if run == "." and _abbreviation(word) == "hard" else "cut"
        last = token.rstrip(_CLOSERS)[-1:]
        if last and last in _CLAUSE:
            need = self._config.first_min_words if self._first else self._config.min_words
            return "cut" if count >= need else "keep"
        return "keep"

    def _idle_cut(self) -> int | None:
        """Where an idle cut would fall: after the last complete word that is no title or initial."""
        if self._buf and not self._buf[-1].isspace() and _tail_ends_sentence(self._buf.split()[-1]):
            return len(self._buf)
        ends = [m.end() for m in _COMPLETE_WORD.finditer(self._buf) if not _is_sticky(m.group())]
        return ends[-1] if ends else None
