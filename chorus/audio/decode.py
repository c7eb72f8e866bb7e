"""Decoding uploaded or configured audio (any container/codec ffmpeg reads) to mono float32."""

from __future__ import annotations

import io

import av
import numpy as np

from chorus.audio.resample import resample


def decode_audio(data: bytes, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Bytes of an audio file → (mono float32 samples in [-1, 1], rate); resampled (soxr) when ``sample_rate``
    is given. Raises ValueError for data that is not audio."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("the file has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate)
            # ffmpeg converts the sample format to planar float; channels are averaged here, the rate left to soxr.
            to_float = av.AudioResampler(format="fltp", rate=rate)
            planes = [out.to_ndarray() for frame in container.decode(stream) for out in to_float.resample(frame)]
            planes += [out.to_ndarray() for out in to_float.resample(None)]
            chunks = [p.mean(axis=0) for p in planes if p.size]
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"not a readable audio file: {e}") from e
    if not chunks:
        raise ValueError("the audio is empty")
    audio = np.concatenate(chunks).astype(np.float32)
    if sample_rate is not None and sample_rate != rate:
        return resample(audio, rate, sample_rate), sample_rate
    return audio, rate
