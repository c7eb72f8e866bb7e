"""The quality gate's speech recogniser: pocketsphinx with its bundled US-English models, free decoding.

One fixed recogniser serves reference and candidate alike: the en-us acoustic model, the CMU pronouncing
dictionary and the general en-us trigram language model that ship inside the ``pocketsphinx`` wheel (nothing
built from the test sentences, so the language model cannot paper over what the audio lost). It is a weak
recogniser (~13 % WER on clean Piper speech), which is what makes it a sensitive one: degraded audio costs words.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import soxr

RECOGNISER_RATE = 16_000
RECOGNISER_NAME = "pocketsphinx 5 (bundled en-us acoustic model, cmudict-en-us, en-us.lm.bin), free decoding"


class Recogniser:
    """Mono float audio → lower-case words. Loads on first use; one decode at a time (pocketsphinx's decoder is
    not thread-safe)."""

    def __init__(self) -> None:
        self._decoder: Any = None
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        if sample_rate != RECOGNISER_RATE:
            x = soxr.resample(x, sample_rate, RECOGNISER_RATE, quality="HQ")
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        with self._lock:
            decoder = self._load()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        return str(hypothesis.hypstr) if hypothesis is not None else ""

    def _load(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(loglevel="FATAL")  # the defaults are the bundled en-us models
        return self._decoder
