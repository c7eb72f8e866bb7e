"""Word timestamps on the HTTP streaming routes (``timestamps: true``): a request's stream, watched.

A :class:`WordClock` observes the stream's outputs (``SpeechStream.observer``); the alignments they carry feed a
:class:`WordTimer`, and each SSE event takes the words whose audio has started by then. A backend without phoneme
alignments (Qwen3) gets its words spread over the audio by length at the end (approximate, see
:func:`chorus.timestamps.spread_words`).
"""

from __future__ import annotations

from collections.abc import Callable

from chorus.engine.request import RequestOutput
from chorus.server.deps import ServerState
from chorus.speech import SpeechStream
from chorus.timestamps import WordTime, WordTimer, spread_words


class WordClock:
    def __init__(self, text: str, word_phonemes: Callable[[str], list[str]] | None) -> None:
        self._text = text
        self._timer = WordTimer(text, word_phonemes) if word_phonemes is not None else None
        self.samples = 0  # engine-rate samples seen
        self.sample_rate: int | None = None

    def watch(self, out: RequestOutput | None) -> None:
        """Count an output that went past (the first one is awaited before the body starts)."""
        if out is None:
            return
        self.sample_rate = out.sample_rate
        self.samples += out.audio.size
        if self._timer is not None:
            self._timer.feed(out.alignments)

    def words(self) -> list[dict[str, object]]:
        """Words whose audio has started and that were not given before (seconds from the request's start)."""
        if self._timer is None or self.sample_rate is None:
            return []
        return self._json(self._timer.ready(self.samples))

    def rest(self) -> list[dict[str, object]]:
        """Every word not given yet: the stream has ended."""
        if self.sample_rate is None:
            return []
        if self._timer is None:
            return self._json(spread_words(self._text, self.samples))
        return self._json(self._timer.finish())

    def _json(self, words: list[WordTime]) -> list[dict[str, object]]:
        rate = self.sample_rate or 1
        return [w.as_json(rate) for w in words]


def word_clock(state: ServerState, stream: SpeechStream, text: str, first: RequestOutput | None) -> WordClock:
    """A clock on ``stream`` (``first``: the output the route already awaited, counted here)."""
    clock = WordClock(text, getattr(state.engine.backend, "word_phonemes", None))
    clock.watch(first)
    stream.observer = clock.watch
    return clock
