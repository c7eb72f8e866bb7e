"""Reference-clip preprocessing on real (espeak-ng) speech: every upload format, every refusal reason."""

from __future__ import annotations

import hashlib
import io
import wave

import numpy as np
import pytest

from chorus.audio.decode import decode_audio
from chorus.audio.resample import resample
from chorus.errors import InvalidRequestError
from chorus.voices.preprocess import (
    InvalidReferenceError,
    ProcessedReference,
    ReferenceLimits,
    clipped_fraction,
    integrated_loudness,
    preprocess_reference,
)
from tests.voices.speech import (
    CODECS,
    OTHER_SENTENCE,
    PARAGRAPH,
    SENTENCE,
    SHORT_SENTENCE,
    encode,
    silence,
    speak,
    wav_bytes,
)

LIMITS = ReferenceLimits()


def refused(data: bytes, code: str, limits: ReferenceLimits = LIMITS) -> InvalidReferenceError:
    with pytest.raises(InvalidReferenceError) as info:
        preprocess_reference(data, limits=limits)
    assert info.value.code == code, f"expected {code}, got {info.value.code}: {info.value}"
    assert info.value.param == "audio_sample"
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.status_code == (413 if code == "too_large" else 400)
    return info.value


def check_accepted(result: ProcessedReference, data: bytes) -> None:
    """What every accepted clip must satisfy, checked from the stored WAV as well as the fields."""
    assert result.sample_rate == LIMITS.sample_rate
    assert result.audio.dtype == np.float32 and result.audio.ndim == 1
    assert not result.audio.flags.writeable
    assert result.original_sha256 == hashlib.sha256(data).hexdigest()
    assert result.processed_sha256 == hashlib.sha256(result.processed_wav).hexdigest()
    with wave.open(io.BytesIO(result.processed_wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, LIMITS.sample_rate)
        assert w.getnframes() == result.audio.size
    stored, rate = decode_audio(result.processed_wav)
    assert rate == LIMITS.sample_rate
    np.testing.assert_allclose(stored, result.audio, atol=2e-4)  # the same samples, in 16 bits
    assert abs(integrated_loudness(stored, rate) - LIMITS.target_lufs) <= 1.0
    assert abs(result.loudness_lufs - LIMITS.target_lufs) <= 1.0
    peak = 20 * np.log10(np.max(np.abs(stored)))
    assert peak <= LIMITS.peak_ceiling_dbfs + 0.01 and abs(result.peak_dbfs - peak) < 0.01
    assert result.duration_s == pytest.approx(result.audio.size / LIMITS.sample_rate)
    assert LIMITS.min_speech_s <= result.speech_seconds <= result.duration_s <= LIMITS.max_duration_s


@pytest.mark.parametrize("fmt", ["wav", *CODECS])
def test_good_clip_in_every_format(fmt: str) -> None:
    speech, rate = speak(SENTENCE)
    data = encode(speech, rate, fmt)
    result = preprocess_reference(data)
    check_accepted(result, data)
    # The ~5.2 s sentence survives whole (plus codec padding), minus espeak's trailing pause at most.
    assert 4.6 <= result.duration_s <= 5.5, result.duration_s
    assert result.speech_seconds >= 0.8 * result.duration_s


def test_leading_and_trailing_silence_is_trimmed() -> None:
    speech, rate = speak(SENTENCE)
    padded = np.concatenate([silence(1.0, rate), speech, silence(1.0, rate)])
    plain = preprocess_reference(wav_bytes(speech, rate))
    trimmed = preprocess_reference(wav_bytes(padded, rate))
    check_accepted(trimmed, wav_bytes(padded, rate))
    assert padded.size / rate - trimmed.duration_s == pytest.approx(2.0, abs=0.15)
    # espeak's clip starts on its first sound, so only the padded one gets the leading margin back.
    assert trimmed.duration_s - plain.duration_s == pytest.approx(LIMITS.trim_margin_s, abs=0.03)
    # The margin keeps ~100 ms before the first sound, no more.
    first_sound = np.flatnonzero(np.abs(trimmed.audio) > 0.01)[0] / LIMITS.sample_rate
    assert 0.05 <= first_sound <= LIMITS.trim_margin_s + 0.03, first_sound


def test_hashes_are_stable() -> None:
    speech, rate = speak(SENTENCE)
    data = encode(speech, rate, "flac")
    first, second = preprocess_reference(data), preprocess_reference(bytes(data))
    assert first.processed_wav == second.processed_wav
    assert (first.original_sha256, first.processed_sha256) == (second.original_sha256, second.processed_sha256)
    other = preprocess_reference(encode(speech, rate, "wav"))
    assert other.original_sha256 != first.original_sha256  # different upload bytes, hashed as uploaded


def test_stereo_input_is_downmixed() -> None:
    speech, rate = speak(SENTENCE)
    other, _ = speak(OTHER_SENTENCE)
    n = min(speech.size, other.size)
    data = wav_bytes(np.stack([speech[:n], 0.5 * other[:n]]), rate)
    result = preprocess_reference(data)
    check_accepted(result, data)


def test_8khz_input_is_resampled() -> None:
    speech, rate = speak(SENTENCE)
    data = wav_bytes(resample(speech, rate, 8_000), 8_000)
    result = preprocess_reference(data)
    check_accepted(result, data)
    assert result.duration_s == pytest.approx(preprocess_reference(wav_bytes(speech, rate)).duration_s, abs=0.05)


def test_quiet_input_is_raised_to_the_target() -> None:
    speech, rate = speak(SENTENCE)
    data = wav_bytes(0.02 * speech, rate)  # about -34 dB
    check_accepted(preprocess_reference(data), data)


def test_too_short() -> None:
    speech, rate = speak(SHORT_SENTENCE)
    assert 1.3 < speech.size / rate < 1.8
    refused(wav_bytes(speech, rate), "too_short")


def test_two_seconds_of_speech_in_twenty_of_silence_is_too_short() -> None:
    # After trimming, what is left is ~2 s of speech: too little, whatever the silence around it.
    speech, rate = speak("Hello there, how are you today?")
    clip = np.concatenate([silence(9.0, rate), speech, silence(9.0, rate)])
    refused(wav_bytes(clip, rate), "too_short")


def test_too_long() -> None:
    parts = [speak(sentence) for sentence in PARAGRAPH]
    rate = parts[0][1]
    clip = np.concatenate([audio for audio, _ in parts])
    assert clip.size / rate >= 40
    error = refused(encode(clip, rate, "mp3"), "too_long")
    assert "after trimming" in error.message


def test_too_long_is_refused_before_decoding_when_the_container_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(data: bytes) -> None:
        raise AssertionError("decoded although the container states its duration")

    monkeypatch.setattr("chorus.voices.preprocess.decode_audio", no_decoding)
    speech, rate = speak(SENTENCE)
    refused(encode(speech, rate, "flac"), "too_long", ReferenceLimits(max_decoded_s=3.0))


def test_mostly_silence_between_sentences() -> None:
    # ~6.5 s of speech spread over ~19 s: enough speech, long enough, but two thirds of it is silence.
    sentences = ["Good morning to you.", "The weather is nice today.", "Please call Stella.", "I like tea."]
    rate = speak(sentences[0])[1]
    pieces: list[np.ndarray] = []
    for sentence in sentences:
        pieces += [speak(sentence)[0], silence(4.0, rate)]
    error = refused(wav_bytes(np.concatenate(pieces[:-1]), rate), "mostly_silence")
    assert "mostly silence" in error.message


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silence_and_hiss_are_mostly_silence(level: float) -> None:
    noise = level * np.random.default_rng(0).standard_normal(10 * 22_050).astype(np.float32)
    refused(wav_bytes(noise, 22_050), "mostly_silence")


def test_clipped() -> None:
    speech, rate = speak(SENTENCE)
    error = refused(wav_bytes(np.clip(8.0 * speech, -1.0, 1.0), rate), "clipped")
    assert "clipped" in error.message


def test_loud_but_unclipped_speech_is_accepted() -> None:
    speech, rate = speak(SENTENCE)
    loud = speech / np.max(np.abs(speech))  # peak exactly at full scale, for one sample
    data = wav_bytes(loud, rate)
    check_accepted(preprocess_reference(data), data)


def test_clipped_fraction_counts_runs_only() -> None:
    x = np.zeros(1000, np.float32)
    x[10] = 1.0  # a lone peak
    x[100:102] = -1.0  # a run of 2: under min_run
    assert clipped_fraction(x, level=0.999, min_run=3) == 0.0
    x[200:210] = 1.0
    x[300:305] = -1.0
    x[305:308] = 1.0  # sign change: two runs of 5 and 3
    assert clipped_fraction(x, level=0.999, min_run=3) == pytest.approx(18 / 1000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 40,
        np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
    ],
    ids=["empty", "broken-wav-header", "random-bytes"],
)
def test_corrupt_bytes_are_not_audio(data: bytes) -> None:
    refused(data, "not_audio")


def test_text_file_is_not_audio() -> None:
    refused(b"This is a plain text file, not a recording.\n" * 200, "not_audio")


def test_truncated_upload_is_not_audio_or_too_short() -> None:
    speech, rate = speak(SENTENCE)
    data = encode(speech, rate, "m4a-aac")
    # The first kilobyte of an MP4 holds no playable audio.
    error = refused(data[:1024], "not_audio")
    assert "could not be decoded" in error.message


def test_too_large() -> None:
    error = refused(b"\0" * (LIMITS.max_bytes + 1), "too_large")
    assert "at most 10.0 MiB" in error.message
    speech, rate = speak(SENTENCE)
    refused(wav_bytes(speech, rate), "too_large", ReferenceLimits(max_bytes=100_000))
