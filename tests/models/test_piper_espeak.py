"""chorus's ctypes bridge to piper-tts's espeak-ng: same phonemes as piper's own bridge, without its leaks."""

from __future__ import annotations

import ctypes
import gc
import tracemalloc

import pytest
from piper import espeakbridge
from piper.voice import _ESPEAK_PHONEMIZER_LOCK

from chorus.models import piper_espeak
from chorus.models.piper import PiperBackend
from chorus.server.malloc import glibc

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


FOREIGN = [
    "We ate a croissant at the café, then some Schadenfreude and déjà vu.",
    "Hello world.",
    "Señor Müller said: ¿qué tal? Bonjour, ça va.",
    "Dr. Smith paid $3.50 on Jan. 5th, 2024; really? Yes! OK: go",
]


def test_voice_once_reaches_espeak_only_when_the_voice_changes() -> None:
    calls: list[str] = []

    def set_voice(voice: str) -> None:
        if voice == "nope":
            raise RuntimeError("unknown voice")
        calls.append(voice)

    once = piper_espeak.VoiceOnce(set_voice)
    for voice in ["en-us", "en-us", "de", "de", "en-us"]:
        once(voice)
    with pytest.raises(RuntimeError):
        once("nope")
    once("en-us")  # the failed change left espeak-ng (and the memo) on en-us
    assert calls == ["en-us", "de", "en-us"]


def test_set_voice_once_gives_the_phonemes_of_setting_it_every_time(piper: PiperBackend, installed: None) -> None:
    voice = piper._voice
    assert isinstance(espeakbridge.set_voice, piper_espeak.VoiceOnce)
    raw = espeakbridge.set_voice.set_voice
    texts = TEXTS + FOREIGN
    once = [voice.phonemize(text) for text in texts + texts]  # espeak-ng's voice set once, then left
    fresh = []
    for text in texts + texts:
        with _ESPEAK_PHONEMIZER_LOCK:
            raw(voice.config.espeak_voice)  # what piper-tts does before every phonemize
        fresh.append(voice.phonemize(text))
    assert once == fresh
    # another voice in between (a second Piper voice in the process): switched to and back, same phonemes
    from piper.phonemize_espeak import EspeakPhonemizer

    with _ESPEAK_PHONEMIZER_LOCK:
        german = EspeakPhonemizer().phonemize("de", "Guten Morgen, wie geht es?")
    assert espeakbridge.set_voice.current == "de" and german and german[0]
    assert [voice.phonemize(text) for text in texts] == once[: len(texts)]
    assert espeakbridge.set_voice.current == voice.config.espeak_voice


class MallInfo2(ctypes.Structure):
    names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    _fields_ = [(name, ctypes.c_size_t) for name in names]


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc accounting")
def test_phonemizing_keeps_no_native_memory(piper: PiperBackend, installed: None) -> None:
    libc = glibc()
    assert libc is not None
    libc.mallinfo2.restype = MallInfo2
    voice = piper._voice
    texts = [f"Sentence number {i}, spoken by the voice. And a second one?" for i in range(1500)]
    for text in texts[:100]:
        voice.phonemize(text)
    gc.collect()
    before = libc.mallinfo2().uordblks  # bytes malloc has handed out and not had back, every arena
    for text in texts[100:]:
        voice.phonemize(text)
    gc.collect()
    grown = libc.mallinfo2().uordblks - before
    # espeak-ng's SetVoiceByName, called before every phonemize as piper-tts does, keeps ~1,360 bytes a call:
    # ~1.9 MB here
    assert grown < 300_000, f"{grown} bytes kept by 1400 phonemizes"
