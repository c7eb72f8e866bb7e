"""chorus.watermark: streaming-exact embedding, detection (and its refusals), payload, attacks, rates, edge cases."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from chorus.audio.decode import decode_audio
from chorus.audio.resample import resample
from chorus.bench.watermark import codec_round_trip
from chorus.watermark import THRESHOLD, Watermarker, detect

KEY = b"test key"
RATE = 22050

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@functools.cache
def speech(voice: str, text: str) -> np.ndarray:
    """espeak-ng speech at 22050 Hz, -20 dBFS RMS."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        audio, rate = decode_audio(path.read_bytes(), sample_rate=RATE)
    assert rate == RATE
    return np.asarray(audio * (0.1 / np.sqrt(np.mean(audio**2))), dtype=np.float32)


def host() -> np.ndarray:
    return speech(
        "en-us",
        "The morning train was late again, so she read the paper on the platform. Please remember to water the "
        "tomatoes before you leave for the weekend, and lock the back door.",
    )


def other_speech() -> np.ndarray:
    return speech("en-gb-x-rp+f3", "A light rain began to fall just as the concert in the park was ending.")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_is_bit_identical_to_whole_whatever_the_chunking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = rng.standard_normal(RATE * 2).astype(np.float32) * 0.1
    marker = Watermarker(KEY, RATE)
    whole = marker.mark(pcm, payload=42)
    stream = marker.stream(payload=42)
    out, pushed, done = [], 0, 0
    while pushed < pcm.size:
        size = int(rng.choice([0, 1, 1, 7, 220, 441, 1000, 5000]))  # empty and 1-sample pushes included
        chunk = stream.push(pcm[pushed : pushed + size])
        pushed = min(pushed + size, pcm.size)
        done += chunk.size
        out.append(chunk)
        assert pushed - done == stream.held_back <= 2 * marker.hop  # ≤ 40 ms held back
    out.append(stream.flush())
    streamed = np.concatenate(out)
    assert streamed.dtype == np.float32
    assert streamed.size == pcm.size
    assert np.array_equal(streamed, whole)


def test_one_sample_pushes_match_whole() -> None:
    pcm = np.random.default_rng(3).standard_normal(3000).astype(np.float32)
    marker = Watermarker(KEY, 24000)
    stream = marker.stream()
    streamed = np.concatenate([*(stream.push(pcm[i : i + 1]) for i in range(pcm.size)), stream.flush()])
    assert np.array_equal(streamed, marker.mark(pcm))
    assert marker.hop * 2 / 24000 <= 0.05


def test_lengths_and_edges() -> None:
    marker = Watermarker(KEY, RATE)
    for n in (0, 1, 219, 441, 883, 10_000):
        pcm = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        assert marker.mark(pcm).size == n
    silence = np.zeros(RATE * 3, dtype=np.float32)
    assert np.array_equal(marker.mark(silence), silence)  # the mark is proportional to the host
    stream = marker.stream()
    stream.flush()
    with pytest.raises(RuntimeError):
        stream.push(silence)


def test_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        Watermarker(KEY, 22051)
    with pytest.raises(ValueError):
        Watermarker(KEY, 8000)
    with pytest.raises(ValueError):
        Watermarker(b"", RATE)
    with pytest.raises(ValueError):
        Watermarker(KEY, RATE).mark(np.zeros(10, np.float32), payload=1 << 16)


@needs_espeak
def test_marked_found_clean_and_wrong_key_not() -> None:
    clip = host()
    marked = Watermarker(KEY, RATE).mark(clip)
    snr = 10 * np.log10(np.sum(clip**2) / np.sum((marked - clip) ** 2))
    assert snr > 20  # espeak-ng is bright: 22 dB; Piper 25-27 dB (the mark is in 1-7 kHz)
    found = detect(marked, RATE, KEY)
    assert found.watermarked and found.score > 2 * THRESHOLD and found.threshold == THRESHOLD
    assert found.payload is None  # marked without payload
    for audio, key in ((clip, KEY), (other_speech(), KEY), (marked, b"another key")):
        miss = detect(audio, RATE, key)
        assert not miss.watermarked and miss.score < 5 and miss.payload is None


@needs_espeak
def test_payload_round_trip() -> None:
    marked = Watermarker(KEY, RATE).mark(host(), payload=0xBEEF)
    found = detect(marked, RATE, KEY)
    assert found.watermarked and found.payload == 0xBEEF
    assert detect(resample(marked, RATE, 16000), 16000, KEY).payload == 0xBEEF


@needs_espeak
def test_found_after_attacks() -> None:
    marked = Watermarker(KEY, RATE).mark(host())
    mp3, mp3_rate = codec_round_trip(marked, RATE, "mp3", 64_000)
    assert detect(mp3, mp3_rate, KEY).watermarked
    assert detect(resample(marked, RATE, 16000), 16000, KEY).watermarked
    start = 12_345  # odd: off every grid
    assert detect(marked[start : start + 3 * RATE], RATE, KEY).watermarked
    assert detect(np.clip(marked * 2, -1, 1), RATE, KEY).watermarked


@needs_espeak
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_other_rates(rate: int) -> None:
    clip = resample(host(), RATE, rate)
    marked = Watermarker(KEY, rate).mark(clip, payload=7)
    found = detect(marked, rate, KEY)
    assert found.watermarked and found.payload == 7
    assert not detect(clip, rate, KEY).watermarked


def test_silence_and_short_input() -> None:
    for audio in (np.zeros(0, np.float32), np.zeros(RATE * 2, np.float32), np.ones(100, np.float32)):
        found = detect(audio, RATE, KEY)
        assert not found.watermarked and found.score == 0.0 and found.payload is None
    noise = np.random.default_rng(0).standard_normal(RATE // 2).astype(np.float32) * 0.1
    short = detect(Watermarker(KEY, RATE).mark(noise), RATE, KEY)  # under a second: not judged
    assert not short.watermarked and short.score == 0.0
