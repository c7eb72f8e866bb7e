"""The Piper backend: windowed decoding equals Piper's own synthesis; alignments; speed; segmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from piper import PiperVoice
from piper.config import SynthesisConfig

from chorus.models.base import SpeechInput, SynthesisParams
from chorus.models.piper import MAX_SEGMENT_PHONEMES, PiperBackend, PiperSlot, bundled_voice_path

QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
TEXT = (
    "Good evening, and welcome to the news at ten. "
    "The weather tomorrow will be mild, with light rain in the afternoon and clear skies at night."
)


def run(piper: PiperBackend, text: str, params: SynthesisParams = QUIET) -> tuple[PiperSlot, list]:
    inp = SpeechInput("t", text, piper.voice_id, params)
    (slot,) = piper.prefill([(inp, piper.preprocess(inp))])
    assert isinstance(slot, PiperSlot)
    outputs = []
    while not slot.is_finished:
        outputs.extend(piper.step([slot]))
    return slot, outputs


def test_windowed_decoding_matches_piper_itself(piper: PiperBackend) -> None:
    slot, outputs = run(piper, TEXT)
    ours = np.concatenate([o.audio for o in outputs])
    voice = PiperVoice.load(bundled_voice_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    reference = np.concatenate([voice.phoneme_ids_to_audio(ids, config) for ids in slot.inp.phoneme_ids])
    assert ours.size == reference.size
    np.testing.assert_allclose(ours, np.clip(reference, -1, 1), atol=1e-4)
    assert len(outputs) > len(slot.inp.phoneme_ids)  # streamed in several windows, not one per segment
    # The first chunk is the short one (fast first audio); later ones are emit_every_frames long.
    assert outputs[0].audio.size == piper.windows.first * piper.hop
    assert max(o.audio.size for o in outputs) > outputs[0].audio.size


def test_alignments_cover_each_segment(piper: PiperBackend) -> None:
    slot, outputs = run(piper, TEXT)
    starts = [i for i, o in enumerate(outputs) if o.alignments]
    assert len(starts) == len(slot.inp.phonemes)  # one set per segment, on its first window
    for n, (begin, phonemes) in enumerate(zip(starts, slot.inp.phonemes, strict=True)):
        end = starts[n + 1] if n + 1 < len(starts) else len(outputs)
        segment_samples = sum(o.audio.size for o in outputs[begin:end])
        alignments = outputs[begin].alignments
        assert [a.phoneme for a in alignments] == ["^", *phonemes, "$"]
        assert sum(a.num_samples for a in alignments) == segment_samples
        assert all(b.start_sample == a.start_sample + a.num_samples for a, b in itertools.pairwise(alignments))


def test_speed_maps_to_length_scale(piper: PiperBackend) -> None:
    normal = sum(o.audio.size for o in run(piper, TEXT)[1])
    fast = sum(o.audio.size for o in run(piper, TEXT, SynthesisParams(speed=2.0, noise_scale=0, noise_w_scale=0))[1])
    assert 0.45 < fast / normal < 0.65  # durations are ceil()ed per phoneme, so not exactly 0.5


def test_long_input_is_segmented_not_truncated(piper: PiperBackend) -> None:
    text = " ".join(["This sentence is one of many, and it keeps going for a while."] * 60)
    inp = SpeechInput("long", text, piper.voice_id)
    prepared = piper.preprocess(inp)
    assert all(len(s) <= MAX_SEGMENT_PHONEMES for s in prepared.phonemes)
    flat = [p for sentence in piper._voice.phonemize(text) for p in sentence]
    assert [p for s in prepared.phonemes for p in s] == flat


@pytest.mark.parametrize("text", ["   ", "\n\t"])
def test_nothing_to_speak_is_a_value_error(piper: PiperBackend, text: str) -> None:
    with pytest.raises(ValueError):
        piper.preprocess(SpeechInput("x", text, piper.voice_id))
