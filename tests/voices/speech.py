"""Real speech for the voice tests: espeak-ng renders it, PyAV encodes it into each upload format.

espeak-ng is a system package (`apt-get install espeak-ng`); without it these tests skip, saying so.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from chorus.audio.decode import decode_audio
from chorus.audio.resample import resample

ESPEAK = shutil.which("espeak-ng")
SKIP_REASON = "espeak-ng is not installed (apt-get install -y espeak-ng): the voice tests need real speech"

SENTENCE = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."  # ~5 s
OTHER_SENTENCE = "I would like a cup of tea with some milk, and perhaps a biscuit or two, please."
SHORT_SENTENCE = "Hello there, how are you?"  # ~1.6 s
PARAGRAPH = [  # ~41 s spoken
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "The station was crowded with travellers waiting for the evening train to the coast.",
    "A small dog sat patiently beside a suitcase, watching the pigeons by the ticket office.",
    "Somewhere a radio played an old song that everybody seemed to know the words to.",
    "When the train finally arrived, the doors opened and the crowd surged forward at once.",
    "Nobody noticed the man in the grey coat who stepped quietly onto the last carriage.",
    "He carried a newspaper folded under one arm and a black umbrella in the other hand.",
    "The journey would take four hours, and he intended to spend every minute of it reading.",
    "Outside the window, the fields and villages slipped past in the fading golden light.",
]


def require_espeak() -> str:
    """The espeak-ng path; skips the calling test (with the install command) where it is missing."""
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    return ESPEAK


@functools.lru_cache(maxsize=64)
def _speak(text: str, voice: str) -> tuple[bytes, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        subprocess.run([require_espeak(), "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        audio, rate = decode_audio(path.read_bytes())
    return audio.tobytes(), rate


def speak(text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """(float32 mono speech, its rate: 22050 Hz) for ``text``; a fresh array each call."""
    data, rate = _speak(text, voice)
    return np.frombuffer(data, np.float32).copy(), rate


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), np.float32)


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit WAV; a (channels, samples) array makes a multi-channel file."""
    channels = audio.reshape(-1, audio.shape[-1]) if audio.ndim > 1 else audio.reshape(1, -1)
    pcm = (np.clip(channels.T, -1.0, 1.0) * 32767.0).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


# upload format → (container, codec, rate the codec is fed at (None: the speech's own), channels)
CODECS: dict[str, tuple[str, str, int | None, int]] = {
    "flac": ("flac", "flac", None, 1),
    "mp3": ("mp3", "libmp3lame", None, 1),
    "ogg-opus": ("ogg", "libopus", 48_000, 1),
    # ffmpeg's own Vorbis encoder (this PyAV has no libvorbis) is experimental and stereo-only
    "ogg-vorbis": ("ogg", "vorbis", None, 2),
    "m4a-aac": ("ipod", "aac", None, 1),
}


def encode(audio: np.ndarray, rate: int, fmt: str) -> bytes:
    """Mono float32 → bytes of an upload in ``fmt`` (``wav`` or a key of CODECS)."""
    if fmt == "wav":
        return wav_bytes(audio, rate)
    container_format, codec, codec_rate, channels = CODECS[fmt]
    if codec_rate is not None and codec_rate != rate:
        audio, rate = resample(audio, rate, codec_rate), codec_rate
    layout = "mono" if channels == 1 else "stereo"
    planes = np.ascontiguousarray(np.repeat(audio.reshape(1, -1), channels, axis=0), np.float32)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.audio.stream.AudioStream)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


FLITE = shutil.which("flite")


@functools.lru_cache(maxsize=64)
def _flite(text: str, voice: str) -> tuple[bytes, int]:
    if FLITE is None:
        pytest.skip("flite is not installed (scripts/install_bench_voices.sh): consent tests need English speech")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        subprocess.run([FLITE, "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
        audio, rate = decode_audio(path.read_bytes())
    return audio.tobytes(), rate


def flite_speak(text: str, voice: str = "slt") -> tuple[np.ndarray, int]:
    """(float32 mono speech, rate) from flite's clustergen voices (slt, rms, awb): English the consent
    recogniser hears (it does not hear espeak-ng's formant speech)."""
    data, rate = _flite(text, voice)
    return np.frombuffer(data, np.float32).copy(), rate
