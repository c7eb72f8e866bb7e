"""chorus's ctypes bridge to piper-tts's espeak-ng: same phonemes as piper's own bridge, without its leak."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from piper import espeakbridge
from piper.voice import _ESPEAK_PHONEMIZER_LOCK

from chorus.models import piper_espeak
from chorus.models.piper import PiperBackend

TEXTS = [
    "Hello world.",
    "Dr. Smith paid $3.50 on Jan. 5th, 2024; really? Yes! OK: go",
    "",
    "   ",
    "naïve café, 日本語 text, with “quotes” and an em — dash.",
    "No terminator at the end",
    "One. Two! Three? Four; five: six, seven.",
    "The year 1999 had 365 days, and pi is 3.14159.",
]


@pytest.fixture(scope="module")
def installed(piper: PiperBackend) -> None:
    # Loading the backend swaps the bridge while piper-tts still leaks; the piper-tts this project pins does.
    assert piper_espeak.replaced is not None, "piper-tts's bridge no longer leaks: drop chorus/models/piper_espeak"
    assert espeakbridge.get_phonemes is not piper_espeak.replaced


@pytest.mark.parametrize("text", TEXTS)
def test_same_clauses_as_piper_bridge(installed: None, text: str) -> None:
    with _ESPEAK_PHONEMIZER_LOCK:
        assert espeakbridge.get_phonemes(text) == piper_espeak.replaced(text)


def test_piper_bridge_leaks_and_ours_does_not(installed: None) -> None:
    assert piper_espeak.bridge_leaks(type("Bridge", (), {"get_phonemes": staticmethod(piper_espeak.replaced)}))
    assert not piper_espeak.bridge_leaks(espeakbridge)


def test_phonemizing_keeps_no_memory(piper: PiperBackend, installed: None) -> None:
    voice = piper._voice
    texts = [f"Sentence number {i}, spoken by the voice. And a second one?" for i in range(1500)]
    for text in texts[:100]:
        voice.phonemize(text)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for text in texts[100:]:
            voice.phonemize(text)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # piper's own bridge keeps ~4 objects (~300 bytes) per clause: 2800 clauses here would keep ~800 KB.
    assert grown < 64_000, f"{grown} bytes kept by 1400 phonemizes"
