"""chorus's ONNX port of resemblyzer's GE2E encoder gives resemblyzer's embeddings, without torch.

resemblyzer, torch and librosa are test-only references here (`pip install '.[voices]'` after the CPU torch); the
comparisons skip, saying so, where they are missing. The speech is espeak-ng's (tests/voices/speech.py).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from chorus.audio.resample import resample
from chorus.voices.ge2e import (
    EMBEDDING_DIM,
    SAMPLE_RATE,
    Ge2eOnnx,
    mel_spectrogram,
    normalise_volume,
    partial_starts,
    trim_long_silences,
)
from tests.voices.speech import OTHER_SENTENCE, PARAGRAPH, SENTENCE, SHORT_SENTENCE, speak

CLIPS = [  # (text, espeak voice): several voices, ~1.6 s (one padded partial), ~5 s and ~22 s
    (SHORT_SENTENCE, "en+f3"),
    (OTHER_SENTENCE, "en+m3"),
    (SENTENCE, "en-us"),
    (" ".join(PARAGRAPH[:5]), "en-gb-x-rp"),
]
IDS = ["1.6s-f3", "4.7s-m3", "5.2s-us", "22s-rp"]


def clip_16k(text: str, voice: str) -> np.ndarray:
    audio, rate = speak(text, voice)
    wav: np.ndarray = np.clip(resample(audio, rate, SAMPLE_RATE), -1.0, 1.0).astype(np.float32)
    return wav


@pytest.fixture(scope="module")
def encoder() -> Ge2eOnnx:
    return Ge2eOnnx()


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """resemblyzer's VoiceEncoder and its audio module (the front end), torch limited to one thread."""
    torch = pytest.importorskip("torch", reason="the reference (resemblyzer) needs torch: scripts/install_qwen.sh")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        resemblyzer = pytest.importorskip("resemblyzer", reason="the reference: pip install '.[voices]'")
        from resemblyzer import audio
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield resemblyzer.VoiceEncoder("cpu", verbose=False), audio
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("text", "voice"), CLIPS, ids=IDS)
def test_embedding_equals_resemblyzers(text: str, voice: str, encoder: Ge2eOnnx, reference: Any) -> None:
    """16 kHz in: resemblyzer's preprocess_wav + embed_utterance, to float32 rounding (measured: cosine 1.0)."""
    voice_encoder, audio = reference
    wav = clip_16k(text, voice)
    expected = voice_encoder.embed_utterance(audio.preprocess_wav(wav))
    got = encoder.embed(wav, SAMPLE_RATE)
    assert got.shape == (EMBEDDING_DIM,) and got.dtype == np.float32
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
    cosine = float(np.dot(got, expected))
    assert cosine >= 0.9999, cosine
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(("text", "voice"), CLIPS[:3], ids=IDS[:3])
def test_embedding_at_the_source_rate_matches_resemblyzers(
    text: str, voice: str, encoder: Ge2eOnnx, reference: Any
) -> None:
    """22.05 kHz in: chorus resamples with soxr, resemblyzer with librosa (soxr_hq too); a whisker apart."""
    voice_encoder, audio = reference
    speech, rate = speak(text, voice)
    expected = voice_encoder.embed_utterance(audio.preprocess_wav(speech, source_sr=rate))
    cosine = float(np.dot(encoder.embed(speech, rate), expected))
    assert cosine >= 0.999, cosine


@pytest.mark.parametrize(("text", "voice"), CLIPS, ids=IDS)
def test_front_end_steps_equal_resemblyzers(text: str, voice: str, reference: Any) -> None:
    _, audio = reference
    wav = clip_16k(text, voice)
    normalised = audio.normalize_volume(wav, -30, increase_only=True)
    np.testing.assert_array_equal(normalise_volume(wav), normalised)
    np.testing.assert_array_equal(trim_long_silences(normalised), audio.trim_long_silences(normalised))
    from resemblyzer import VoiceEncoder

    _, mel_slices = VoiceEncoder.compute_partial_slices(wav.size, 1.3, 0.75)
    assert partial_starts(wav.size) == [s.start for s in mel_slices]


@pytest.mark.parametrize("num_samples", [400, 16_000, 16_123, 80_000])
def test_mel_spectrogram_equals_librosas(num_samples: int) -> None:
    """resemblyzer's ``wav_to_mel_spectrogram``: librosa's power mel spectrogram, which chorus does not import."""
    librosa = pytest.importorskip("librosa", reason="the reference for the mel spectrogram")
    rng = np.random.default_rng(num_samples)
    wav = (0.3 * rng.standard_normal(num_samples) * np.sin(np.arange(num_samples) / 900.0)).astype(np.float32)
    expected = librosa.feature.melspectrogram(y=wav, sr=SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=40).T
    got = mel_spectrogram(wav)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_partials_cover_any_length() -> None:
    assert partial_starts(1) == [0]  # one (zero-padded) partial for a very short clip
    starts = partial_starts(SAMPLE_RATE * 10)
    assert starts[0] == 0 and all(b - a == 77 for a, b in itertools.pairwise(starts))  # 1.3 per second


def test_embedding_needs_no_torch() -> None:
    """The base install embeds speakers: neither torch nor the other reference packages get imported."""
    code = (
        "import sys, numpy as np; import chorus.voices.ge2e as g; "
        "e = g.Ge2eOnnx().embed(0.3 * np.sin(np.arange(33075) * 0.07).astype(np.float32), 22050); "
        "print(e.shape, sorted(m for m in ('torch', 'resemblyzer', 'librosa', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "(256,) []"


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, np.float32), SAMPLE_RATE, "non-empty"),
        (np.zeros((2, 16_000), np.float32), SAMPLE_RATE, "mono"),
        (np.full(16_000, np.nan, np.float32), SAMPLE_RATE, "NaN"),
        (np.array([0.1, np.inf] * 8_000, np.float32), SAMPLE_RATE, "infinite"),
        (np.zeros(16_000, np.float32), SAMPLE_RATE, "silent"),
        (np.zeros(44_100, np.float32), 44_100, "silent"),
        (np.ones(16_000, np.float32), 0, "sample rate"),
    ],
    ids=["empty", "stereo", "nan", "inf", "silent", "silent-44k", "rate"],
)
def test_unusable_audio_is_refused(encoder: Ge2eOnnx, audio: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encoder.embed(audio, rate)


def test_concurrent_calls_agree(encoder: Ge2eOnnx) -> None:
    wav = clip_16k(SHORT_SENTENCE, "en+f3")
    alone = encoder.embed(wav)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: encoder.embed(wav), range(8)))
    for result in results:
        np.testing.assert_array_equal(result, alone)
