"""Cloned voices on Piper: conversion runs per slot inside the engine's step, so the batch invariant holds for
converted audio too; the converter's held-back audio comes out at every segment end and on early stops."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from chorus.engine.request import RequestStatus
from chorus.models.base import ReferenceVoice, SpeechInput
from chorus.models.cloning import voice_model
from chorus.models.piper import PiperBackend
from tests.engine.helpers import make_engine, run_until_idle, submit
from tests.engine.test_batch_invariance import MAIN, OTHERS, QUIET
from tests.voices.speech import OTHER_SENTENCE, SENTENCE, speak

CLONE = "voice_engine_test"


@pytest.fixture(scope="module")
def cloned(piper: PiperBackend) -> Iterator[str]:
    audio, rate = speak(f"{SENTENCE} {OTHER_SENTENCE}", "en-us+f3")
    data = piper.build_voice(ReferenceVoice(CLONE, audio, rate, f"{SENTENCE} {OTHER_SENTENCE}", "en"))
    piper.load_voice(CLONE, data)
    yield CLONE
    piper.unload_voice(CLONE)


def _alone(piper: PiperBackend, voice: str, **config: object) -> np.ndarray:
    engine = make_engine(piper, **config)
    _, sink = submit(engine, MAIN, "main", params=QUIET, voice=voice)
    run_until_idle(engine)
    assert sink.status == RequestStatus.FINISHED_STOPPED
    return sink.audio()


def test_converted_audio_is_the_same_alone_and_in_a_mixed_batch(piper: PiperBackend, cloned: str) -> None:
    alone = _alone(piper, cloned, step_budget_s=0.02)
    base = _alone(piper, piper.voice_id, step_budget_s=0.02)
    assert alone.size == base.size and not np.array_equal(alone, base)  # converted, same timing

    engine = make_engine(piper, step_budget_s=0.02)
    _, main = submit(engine, MAIN, "main", params=QUIET, voice=cloned)
    _, plain = submit(engine, MAIN, "plain", params=QUIET)
    for step in range(40):
        if step == 1:
            submit(engine, OTHERS[1], "o1", params=QUIET, voice=cloned)
        if step == 3:
            submit(engine, OTHERS[2], "o2", params=QUIET, voice=cloned)
        if step == 5:
            engine.abort("o2")  # a cloned request leaving mid-stream disturbs nobody
        engine.step()
    run_until_idle(engine)
    np.testing.assert_array_equal(main.audio(), alone)
    np.testing.assert_array_equal(plain.audio(), base)


def test_an_early_stop_flushes_the_converters_held_audio(piper: PiperBackend, cloned: str) -> None:
    """flush() (the engine's early stop) returns what the converter holds: no audio of a window is lost."""
    inp = SpeechInput("capped", MAIN, cloned, QUIET)
    (slot,) = piper.prefill([(inp, piper.preprocess(inp))])
    out = piper.step([slot])[0]
    assert not out.is_segment_end and out.audio.size < out.num_frames * piper.hop  # some held back...
    held = piper.flush(slot)
    assert out.audio.size + held.size == out.num_frames * piper.hop  # ...and all of it returned
    piper.release(slot)


def test_voice_models_check_their_format(piper: PiperBackend, cloned: str) -> None:
    assert piper.has_voice(cloned) and not piper.has_voice("voice_other")
    with pytest.raises(voice_model.VoiceModelFormatError):
        piper.load_voice("voice_other", voice_model.pack("piper-world-1:another-voice:0", b"x"))
    with pytest.raises(voice_model.VoiceModelFormatError):
        piper.load_voice("voice_other", voice_model.pack(piper.voice_model_format, b"not a model"))
    with pytest.raises(ValueError, match="unknown voice"):
        piper.preprocess(SpeechInput("r", "Hello.", "voice_other"))
