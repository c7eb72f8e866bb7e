"""Word timestamps against a forced alignment, for ``chorus bench-agent``: each test sentence spoken in its own
session with timestamps on, its words' times compared with pocketsphinx's forced alignment of the received audio
(bundled en-us models). Sentences with a word missing from the aligner's dictionary, or whose alignment fails, are
counted and reported, not compared.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from chorus.bench.corpus import SENTENCES
from chorus.bench.servers import Server
from chorus.bench.workloads import percentile
from chorus.client import SpeechSession
from chorus.timestamps import split_words

VOICE = "joe"
RATE = 22_050
SESSION_TIMEOUT_S = 120.0

ALIGNER = "pocketsphinx 5 forced alignment, bundled en-us acoustic model and cmudict-en-us, 10 ms frames"
ALIGN_RATE = 16_000
TEST_SPLIT = SENTENCES[1::2]  # the even-indexed sentences were the development split; nothing was tuned either way


class Aligner:
    """Word (start, end) seconds of known text in audio; a reason string when it cannot align."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(loglevel="FATAL")

    def align(self, pcm: bytes, words: list[str]) -> list[tuple[float, float]] | str:
        import soxr

        wanted = [w.lower() for w in words]
        missing = sorted({w for w in wanted if self._decoder.lookup_word(w) is None})
        if missing:
            return f"not in the aligner's dictionary: {', '.join(missing)}"
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
        audio = soxr.resample(audio, RATE, ALIGN_RATE, quality="HQ")
        raw = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        try:
            self._decoder.set_align_text(" ".join(wanted))
            self._decoder.start_utt()
            self._decoder.process_raw(raw, full_utt=True)
            self._decoder.end_utt()
        except RuntimeError as e:
            return f"alignment failed: {e}"
        segments = [
            (re.sub(r"\(\d+\)$", "", s.word), s.start_frame / 100.0, (s.end_frame + 1) / 100.0)
            for s in self._decoder.seg()
            if not s.word.startswith(("<", "["))  # <s>, </s>, <sil>, [NOISE]: not words of the text
        ]
        if [w for w, _, _ in segments] != wanted:
            return "alignment failed (the aligner's words differ from the text's)"
        return [(start, end) for _, start, end in segments]


async def spoken_with_words(server: Server, text: str) -> tuple[bytes, list[dict[str, Any]], list[str]]:
    """One session, the whole text at once: (pcm, timestamp words, errors)."""
    pcm, words, errors = bytearray(), list[dict[str, Any]](), list[str]()
    async with (
        asyncio.timeout(SESSION_TIMEOUT_S),
        SpeechSession.connect(server.base_url, voice=VOICE, sample_rate=RATE, timestamps=True) as tts,
    ):
        await tts.append(text)
        await tts.flush()
        async for event in tts.events():
            if event.type == "audio":
                pcm += event.audio
            elif event.type == "response.timestamps":
                words += event.words
            elif event.type == "error":
                errors.append(str(event.data.get("error", event.data))[:200])
            elif event.type == "response.audio.done":
                break
    return bytes(pcm), words, errors


def timestamp_accuracy(server: Server, count: int) -> dict[str, Any]:
    sentences = list(TEST_SPLIT[:count])
    aligner = Aligner()
    end_err: list[float] = []
    start_err: list[float] = []
    failed: list[dict[str, str]] = []
    gaps: dict[str, list[float]] = {"chorus": [], "aligner": []}
    for text in sentences:
        pcm, words, errors = asyncio.run(spoken_with_words(server, text))
        expected = split_words(text)
        if errors or [w["word"] for w in words] != expected:
            failed.append({"sentence": text, "reason": f"chorus: {errors or 'timestamps do not match the words'}"})
            continue
        aligned = aligner.align(pcm, expected)
        if isinstance(aligned, str):
            failed.append({"sentence": text, "reason": aligned})
            continue
        for i, (w, (start, end)) in enumerate(zip(words, aligned, strict=True)):
            start_err.append(float(w["start_s"]) - start)
            end_err.append(float(w["end_s"]) - end)
            if i:  # the pause before a word: whose is it?
                gaps["chorus"].append(float(w["start_s"]) - float(words[i - 1]["end_s"]))
                gaps["aligner"].append(start - aligned[i - 1][1])

    def stats(errs: list[float], name: str) -> dict[str, float | None]:
        absolute = [abs(e) for e in errs]
        return {
            f"{name}_mae_s": sum(absolute) / len(absolute) if absolute else None,
            f"{name}_median_abs_s": percentile(absolute, 50),
            f"{name}_p90_abs_s": percentile(absolute, 90),
            f"{name}_bias_s": sum(errs) / len(errs) if errs else None,
        }

    return {
        "aligner": ALIGNER,
        "split": "test: odd-indexed corpus sentences, in order",
        "sentences": len(sentences),
        "sentences_aligned": len(sentences) - len(failed),
        "words": len(end_err),
        **stats(end_err, "end"),
        **stats(start_err, "start"),
        "gap_median_s": {who: percentile(values, 50) for who, values in gaps.items()},
        "failed": failed,
        "end_errors_s": [round(e, 4) for e in end_err],
    }
