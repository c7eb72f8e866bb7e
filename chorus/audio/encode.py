"""Streaming encoders: float32 PCM chunks in, bytes of the response format out, as they are ready.

pcm and wav are written by hand (s16le); mp3, opus (Ogg), aac (ADTS) and flac go through PyAV's
ffmpeg codecs, muxed into a sink that is drained after every chunk, so the first bytes leave before
synthesis ends.
"""

from __future__ import annotations

import struct
from typing import Literal, Protocol

import av
import numpy as np

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
RAW_FORMATS = frozenset({"wav", "pcm"})  # samples as they are: encoding them is a copy

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

# format → (container, codec)
_AV_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


def float_to_s16le(audio: np.ndarray) -> bytes:
    samples: np.ndarray = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return samples.tobytes()


class StreamEncoder(Protocol):
    def encode(self, audio: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...


class PcmEncoder:
    """Raw s16le mono, OpenAI's ``pcm``."""

    def encode(self, audio: np.ndarray) -> bytes:
        return float_to_s16le(audio)

    def finish(self) -> bytes:
        return b""


class WavEncoder(PcmEncoder):
    """A WAV header whose sizes say 'unknown' (0xFFFFFFFF, as streaming servers send), then s16le."""

    def __init__(self, sample_rate: int) -> None:
        self._header: bytes | None = _wav_header(sample_rate)

    def encode(self, audio: np.ndarray) -> bytes:
        header, self._header = self._header or b"", None
        return header + float_to_s16le(audio)

    def finish(self) -> bytes:
        header, self._header = self._header or b"", None  # an empty stream is still a valid file
        return header


def _wav_header(sample_rate: int) -> bytes:
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


WAV_HEADER_BYTES = 44


def sized_wav(data: bytes) -> bytes:
    """A whole streamed WAV (header + s16le) with its real sizes written in, for a file kept at rest."""
    if len(data) < WAV_HEADER_BYTES or data[:4] != b"RIFF":
        raise ValueError("not a chorus WAV stream")
    body = len(data) - WAV_HEADER_BYTES
    return data[:4] + struct.pack("<I", 36 + body) + data[8:40] + struct.pack("<I", body) + data[44:]


class _Sink:
    """A write-only, non-seekable file for the muxer; drained after each chunk."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def drain(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class AvEncoder:
    def __init__(self, fmt: str, sample_rate: int, *, bit_rate: int | None = None) -> None:
        container, codec = _AV_FORMATS[fmt]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=container)
        stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        self._stream = stream
        if bit_rate is not None:
            self._stream.bit_rate = bit_rate
        elif fmt == "mp3":
            self._stream.bit_rate = 128_000
        self._rate = sample_rate
        self._closed = False

    def encode(self, audio: np.ndarray) -> bytes:
        if audio.size:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
            )
            frame.sample_rate = self._rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.drain()

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.drain()


def make_encoder(fmt: str, sample_rate: int, *, bit_rate: int | None = None) -> StreamEncoder:
    """An encoder for ``fmt``; ``bit_rate`` (bits/s) for the lossy codecs (default: mp3 128k, the codec's own)."""
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavEncoder(sample_rate)
    if fmt in _AV_FORMATS:
        return AvEncoder(fmt, sample_rate, bit_rate=bit_rate)
    raise ValueError(f"unsupported response format {fmt!r}")
