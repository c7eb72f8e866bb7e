"""A leak-free ``get_phonemes`` for piper-tts's bundled espeak-ng.

piper-tts 1.8's C bridge (``piper.espeakbridge.get_phonemes``) appends each clause's tuple to its result list
with ``PyList_Append(list, Py_BuildValue(...))`` and never drops its own reference, so every clause of every
request stays in memory for the life of the process (measured: ~2 KiB of RSS per phonemized request, the
memory creep of the 10-minute soak). The espeak-ng inside that same shared object exports
``espeak_TextToPhonemesWithTerminator``; this module calls it through ctypes and returns the same
``[(phonemes, terminator, end_of_sentence), ...]`` list, with ordinary Python ownership.

``install()`` swaps it in only when the running piper-tts still leaks (a reference count probe), so a fixed
piper-tts keeps its own bridge. Callers hold piper's ``_ESPEAK_PHONEMIZER_LOCK`` as before: piper calls
``get_phonemes`` inside that lock, and espeak-ng's state is the one the bridge initialised (``dlopen`` of the
same file returns the already loaded library).

piper-tts also calls ``set_voice`` before every phonemize, and espeak-ng's ``espeak_SetVoiceByName`` keeps
~1.4 KB of native memory per call (``DoVoiceChange``: 1,360 bytes a call measured over 20,000 calls; heaptrack
named it in the soak server, about one call per request: the rest of issue #11's creep). ``install()`` also
puts :class:`VoiceOnce` in front of it, which reaches espeak-ng only when the voice changes.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

ESPEAK_CHARS_AUTO = 0
ESPEAK_PHONEMES_IPA = 0x02

# espeak-ng's clause flags (translate.h), as piper's bridge categorises them.
_INTONATION_FULL_STOP = 0x00000000
_INTONATION_COMMA = 0x00001000
_INTONATION_QUESTION = 0x00002000
_INTONATION_EXCLAMATION = 0x00003000
_TYPE_CLAUSE = 0x00040000
_TYPE_SENTENCE = 0x00080000
_TERMINATORS = {
    40 | _INTONATION_FULL_STOP | _TYPE_SENTENCE: ".",
    40 | _INTONATION_QUESTION | _TYPE_SENTENCE: "?",
    45 | _INTONATION_EXCLAMATION | _TYPE_SENTENCE: "!",
    20 | _INTONATION_COMMA | _TYPE_CLAUSE: ",",
    30 | _INTONATION_FULL_STOP | _TYPE_CLAUSE: ":",
    30 | _INTONATION_COMMA | _TYPE_CLAUSE: ";",
}

_install_lock = threading.Lock()
_installed = False
# piper's own function, kept once replaced (tests compare against it).
replaced: Any = None


class EspeakPhonemes:
    """``get_phonemes`` over the bridge's own espeak-ng, without the bridge's reference leak."""

    def __init__(self, library_path: str) -> None:
        library = ctypes.CDLL(library_path)
        fn = library.espeak_TextToPhonemesWithTerminator
        fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        fn.restype = ctypes.c_char_p
        self._fn = fn

    def __call__(self, text: str) -> list[tuple[str, str, bool]]:
        # espeak-ng reads the NUL-terminated UTF-8 buffer and advances the pointer clause by clause,
        # setting it to NULL after the last one.
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses: list[tuple[str, str, bool]] = []
        while cursor.value:
            flags = ctypes.c_int(0)
            phonemes = self._fn(ctypes.byref(cursor), ESPEAK_CHARS_AUTO, ESPEAK_PHONEMES_IPA, ctypes.byref(flags))
            terminator = flags.value & 0x000FFFFF
            clauses.append(
                (
                    (phonemes or b"").decode("utf-8"),
                    _TERMINATORS.get(terminator, ""),
                    (terminator & _TYPE_SENTENCE) == _TYPE_SENTENCE,
                )
            )
        return clauses


class VoiceOnce:
    """``set_voice`` that reaches espeak-ng only when the voice changes (callers hold piper's espeak lock)."""

    def __init__(self, set_voice: Any) -> None:
        self.set_voice = set_voice
        self.current: str | None = None

    def __call__(self, voice: str) -> None:
        if voice != self.current:
            self.set_voice(voice)  # may raise (unknown voice): then nothing is remembered
            self.current = voice


def bridge_leaks(bridge: Any) -> bool:
    """Whether ``bridge.get_phonemes`` keeps an extra reference to the tuples it returns."""
    result = bridge.get_phonemes("probe")
    if not result:
        return False
    # One reference from the list, one from getrefcount's argument; a leaking bridge holds a third.
    return sys.getrefcount(result[0]) > 2


def install() -> bool:
    """Replace piper-tts's leaking ``get_phonemes`` with :class:`EspeakPhonemes` (True when ours is in use) and
    put :class:`VoiceOnce` in front of ``set_voice`` (always).

    Idempotent. Needs espeak-ng initialised (piper does it when its first voice phonemizes), so the backend
    calls this after one phonemize. Runs under piper's espeak lock, like every phonemize.
    """
    global _installed, replaced
    from piper import espeakbridge
    from piper.voice import _ESPEAK_PHONEMIZER_LOCK

    with _install_lock, _ESPEAK_PHONEMIZER_LOCK:
        if not isinstance(espeakbridge.set_voice, VoiceOnce):
            espeakbridge.set_voice = VoiceOnce(espeakbridge.set_voice)
        if _installed:
            return True
        if not bridge_leaks(espeakbridge):
            return False
        ours = EspeakPhonemes(str(espeakbridge.__file__))
        sample = "Dr. Smith paid $3.50, twice; then: why? Stop! And go"
        if ours(sample) != espeakbridge.get_phonemes(sample):
            log.warning("espeak ctypes bridge disagrees with piper's; keeping piper's (it leaks memory)")
            return False
        replaced = espeakbridge.get_phonemes
        espeakbridge.get_phonemes = ours
        _installed = True
        log.info("piper-tts's get_phonemes leaks a reference per clause; using chorus's ctypes bridge")
        return True
