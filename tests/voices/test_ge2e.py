"""chorus's ONNX port of resemblyzer's GE2E encoder gives resemblyzer's embeddings (resemblyzer, torch and librosa
are test-only references here: `pip install '.[voices]'` after the CPU torch)."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pytest

from chorus.audio.resample import resample
from chorus.voices.ge2e import Ge2eOnnx, mel_spectrogram, normalise_volume, partial_starts, trim_long_silences
from tests.voices.speech import PARAGRAPH, SENTENCE, SHORT_SENTENCE, speak

CLIPS = [  # (text, espeak voice): ~1.6 s, ~5 s, ~20 s
    (SHORT_SENTENCE, "en+f3"),
    (SENTENCE, "en-us"),
    (" ".join(PARAGRAPH[:4]), "en-gb-x-rp"),
]


def clip(text: str, voice: str) -> np.ndarray:
    audio, rate = speak(text, voice)
    return np.clip(resample(audio, rate, 16_000), -1.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> Any:
    """resemblyzer's own modules: (VoiceEncoder, its audio module)."""
    pytest.importorskip("torch", reason="resemblyzer (the reference) needs torch: scripts/install_qwen.sh")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        resemblyzer = pytest.importorskip("resemblyzer", reason="the reference: pip install '.[voices]'")
        from resemblyzer import audio
    return resemblyzer.VoiceEncoder("cpu", verbose=False), audio


@pytest.mark.parametrize(("text", "voice"), CLIPS, ids=["short", "5s", "20s"])
def test_embedding_equals_resemblyzers(text: str, voice: str, reference: Any) -> None:
    encoder, audio = reference
    wav = clip(text, voice)
    expected = encoder.embed_utterance(audio.trim_long_silences(audio.normalize_volume(wav, -30, increase_only=True)))
    got = Ge2eOnnx().embed(wav)
    assert got.shape == (256,) and got.dtype == np.float32
    assert float(np.dot(got, expected)) > 0.9999


@pytest.mark.parametrize(("text", "voice"), CLIPS, ids=["short", "5s", "20s"])
def test_front_end_steps_equal_resemblyzers(text: str, voice: str, reference: Any) -> None:
    _, audio = reference
    wav = clip(text, voice)
    normalised = audio.normalize_volume(wav, -30, increase_only=True)
    np.testing.assert_allclose(normalise_volume(wav), normalised, rtol=1e-6)
    np.testing.assert_array_equal(trim_long_silences(normalised), audio.trim_long_silences(normalised))
    expected_mel = audio.wav_to_mel_spectrogram(normalised)  # librosa's melspectrogram
    np.testing.assert_allclose(mel_spectrogram(normalised), expected_mel, rtol=1e-4, atol=1e-6 * expected_mel.max())
    from resemblyzer import VoiceEncoder

    _, mel_slices = VoiceEncoder.compute_partial_slices(wav.size, 1.3, 0.75)
    assert partial_starts(wav.size) == [s.start for s in mel_slices]


def test_partials_cover_any_length() -> None:
    assert partial_starts(1) == [0]  # one (zero-padded) partial for a very short clip
    starts = partial_starts(16_000 * 10)
    assert starts[0] == 0 and all(b - a == 77 for a, b in itertools.pairwise(starts))  # 1.3 per second


def test_silence_is_refused() -> None:
    with pytest.raises(ValueError, match="silent"):
        Ge2eOnnx().embed(np.zeros(16_000, np.float32))
