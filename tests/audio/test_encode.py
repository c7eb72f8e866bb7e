"""Every response format streams (bytes before the end) and decodes back to the audio's length."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from chorus.audio.encode import RESPONSE_FORMATS, make_encoder, sized_wav
from chorus.audio.resample import StreamResampler, resample

RATE = 24_000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767, RATE
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return np.concatenate(frames).astype(np.float32), rate


@pytest.mark.parametrize("fmt", RESPONSE_FORMATS)
def test_streams_and_decodes(fmt: str) -> None:
    encoder = make_encoder(fmt, RATE)
    pieces = [encoder.encode(tone(0.5)) for _ in range(4)]
    tail = encoder.finish()
    assert sum(len(p) for p in pieces[:2]) > 0, "first bytes must be ready before the end"
    audio, rate = decode(b"".join(pieces) + tail, fmt)
    duration = audio.size / rate
    assert abs(duration - 2.0) < 0.1, duration
    assert np.sqrt(np.mean(audio**2)) > 0.1  # not silence


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        make_encoder("xyz", RATE)


def test_streaming_resampler_matches_one_shot() -> None:
    x = tone(1.0)
    stream = StreamResampler(RATE, 22_050)
    chunks = [stream.process(x[i : i + 1000]) for i in range(0, x.size, 1000)]
    chunks.append(stream.process(np.zeros(0, np.float32), last=True))
    pieced = np.concatenate(chunks)
    whole = resample(x, RATE, 22_050)
    assert abs(pieced.size - whole.size) <= 1
    n = min(pieced.size, whole.size)
    np.testing.assert_allclose(pieced[:n], whole[:n], atol=1e-4)


def test_a_streamed_wav_kept_at_rest_gets_its_real_sizes() -> None:
    encoder = make_encoder("wav", 16_000)
    streamed = encoder.encode(np.zeros(1600, dtype=np.float32)) + encoder.encode(np.ones(800, dtype=np.float32) / 2)
    streamed += encoder.finish()
    with wave.open(io.BytesIO(sized_wav(streamed))) as w:
        assert (w.getnframes(), w.getframerate()) == (2400, 16_000)
    assert sized_wav(streamed)[44:] == streamed[44:]
    with pytest.raises(ValueError):
        sized_wav(b"ID3 not a wav at all, long enough to have a header.........")
