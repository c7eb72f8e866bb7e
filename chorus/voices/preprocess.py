"""Checking and cleaning an uploaded voice-cloning reference clip before it is stored.

A cloned voice is only as good as its reference: clipping, long silences, a few words or a whole
podcast all make a worse voice, and each is cheaper to refuse at upload, with a reason the user can
act on, than to discover in every synthesis. Accepted audio is brought to one form (mono, one rate,
silence trimmed, one loudness) so that the models, the speaker embedding and the stored file all see
the same samples, and its hashes make the stored file verifiable and deduplicable.

Steps: size → decode (any container PyAV reads; channels averaged) → clipping check on the decoded
samples, before anything rescales or smooths them → resample (soxr) → trim leading/trailing silence
→ measure speech → duration and speech checks → loudness normalisation (ITU-R BS.1770 integrated
loudness, pyloudnorm) with a peak ceiling → 16-bit WAV.
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

from chorus.audio.decode import decode_audio
from chorus.audio.encode import float_to_s16le
from chorus.audio.resample import resample
from chorus.errors import InvalidRequestError

ReferenceErrorCode = Literal["too_large", "not_audio", "too_short", "too_long", "mostly_silence", "clipped"]

_EPS = 1e-12  # keeps log10 finite on digital silence


class InvalidReferenceError(InvalidRequestError):
    """A reference clip was refused; ``code`` says why, so that clients can react without parsing text."""

    def __init__(self, code: ReferenceErrorCode, message: str) -> None:
        super().__init__(message, param="audio_sample")
        self.code: ReferenceErrorCode = code
        if code == "too_large":
            self.status_code = 413  # Payload Too Large: the one refusal a client fixes without listening to it


@dataclass(frozen=True)
class ReferenceLimits:
    """What a reference clip must satisfy, and the targets it is brought to."""

    # Upload size (raw bytes), checked before decoding: 30 s of even uncompressed 48 kHz stereo WAV fits.
    max_bytes: int = 10 * 1024 * 1024
    # Decoded length before trimming. A small compressed file can hold hours of audio; metadata is checked
    # before decoding (when the container states it) and the decoded length after.
    max_decoded_s: float = 120.0
    # Rate of the processed audio (the Qwen3-TTS codec's rate).
    sample_rate: int = 24_000
    # Clipping: samples at |x| >= clip_level in runs of at least clip_min_run samples (one full-scale
    # sample is a peak, a flat run is a clipped waveform); refused above max_clipped_fraction of all samples.
    clip_level: float = 0.999
    clip_min_run: int = 3
    max_clipped_fraction: float = 0.005
    # Energy frames for trimming and speech measurement.
    frame_s: float = 0.020
    # Leading/trailing frames quieter than this (dB relative to the loudest frame) are silence...
    trim_threshold_db: float = -40.0
    # ...but this much audio is kept either side of the first/last loud frame, so onsets and decays survive.
    trim_margin_s: float = 0.100
    # If even the loudest frame is below this (dBFS RMS), there is nothing above the noise floor.
    noise_floor_dbfs: float = -50.0
    # Speech frames: louder than this relative to the loudest frame (fricatives sit 20-35 dB under vowels)...
    speech_threshold_db: float = -35.0
    # ...and quieter gaps up to this long between speech frames count as speech (stop closures, word gaps).
    speech_max_gap_s: float = 0.300
    # Speech needed to model a voice, and the most trimmed audio accepted (prompts grow with it).
    min_speech_s: float = 3.0
    max_duration_s: float = 30.0
    # Speech must fill at least this fraction of the trimmed clip.
    min_speech_fraction: float = 0.5
    # Loudness target (LUFS, EBU R128's programme level) and the sample-peak ceiling (dBFS) that wins over it.
    target_lufs: float = -23.0
    peak_ceiling_dbfs: float = -1.0


@dataclass(frozen=True, eq=False)
class ProcessedReference:
    """An accepted reference clip. ``audio`` is read-only; ``processed_wav`` holds the same samples in 16 bits.

    ``peak_dbfs`` and ``loudness_lufs`` describe the processed audio; ``duration_s`` is its length (after
    trimming), ``speech_seconds`` the part of it that is speech.
    """

    audio: np.ndarray
    sample_rate: int
    original_sha256: str
    processed_wav: bytes
    processed_sha256: str
    speech_seconds: float
    duration_s: float
    peak_dbfs: float
    loudness_lufs: float


def preprocess_reference(data: bytes, *, limits: ReferenceLimits = ReferenceLimits()) -> ProcessedReference:
    """Validate and normalise an uploaded reference clip; raises :class:`InvalidReferenceError` with a code."""
    if len(data) > limits.max_bytes:
        raise InvalidReferenceError(
            "too_large", f"the audio sample is {len(data) / 2**20:.1f} MiB; at most {limits.max_bytes / 2**20:.1f} MiB"
        )
    _check_stated_duration(data, limits)
    try:
        decoded, rate = decode_audio(data)
    except ValueError as e:
        raise InvalidReferenceError("not_audio", f"the audio sample could not be decoded: {e}") from e
    decoded_s = decoded.size / rate
    if decoded_s > limits.max_decoded_s:
        raise InvalidReferenceError(
            "too_long", f"the audio sample is {decoded_s:.0f} s long; at most {limits.max_decoded_s:.0f} s"
        )
    if not np.all(np.isfinite(decoded)):
        raise InvalidReferenceError("not_audio", "the audio sample contains invalid (NaN or infinite) samples")

    clipped = clipped_fraction(decoded, level=limits.clip_level, min_run=limits.clip_min_run)
    if clipped > limits.max_clipped_fraction:
        raise InvalidReferenceError(
            "clipped",
            f"the audio sample is clipped ({clipped:.1%} of samples at full scale); record it at a lower level",
        )

    audio = resample(decoded, rate, limits.sample_rate)
    frame = max(1, round(limits.frame_s * limits.sample_rate))
    levels = frame_levels_db(audio, frame)
    loudest = float(levels.max()) if levels.size else -np.inf
    if loudest < limits.noise_floor_dbfs:
        raise InvalidReferenceError("mostly_silence", "the audio sample has no sound above the noise floor")

    audio, levels = _trim(audio, levels, loudest, frame, limits)
    duration_s = audio.size / limits.sample_rate
    if duration_s > limits.max_duration_s:
        raise InvalidReferenceError(
            "too_long",
            f"the audio sample is {duration_s:.1f} s long after trimming silence; at most {limits.max_duration_s:g} s",
        )
    speech_frames = _speech_frames(levels, loudest, frame, limits)
    speech_s = min(duration_s, speech_frames * frame / limits.sample_rate)
    if speech_s < limits.min_speech_s:
        raise InvalidReferenceError(
            "too_short", f"the audio sample has {speech_s:.1f} s of speech; at least {limits.min_speech_s:g} s"
        )
    if speech_s < limits.min_speech_fraction * duration_s:
        raise InvalidReferenceError(
            "mostly_silence",
            f"the audio sample is mostly silence ({speech_s:.1f} s of speech in {duration_s:.1f} s); "
            f"at least {limits.min_speech_fraction:.0%} must be speech",
        )

    audio = _normalise(audio, limits)
    audio.flags.writeable = False
    wav = wav_bytes(audio, limits.sample_rate)
    return ProcessedReference(
        audio=audio,
        sample_rate=limits.sample_rate,
        original_sha256=hashlib.sha256(data).hexdigest(),
        processed_wav=wav,
        processed_sha256=hashlib.sha256(wav).hexdigest(),
        speech_seconds=speech_s,
        duration_s=duration_s,
        peak_dbfs=_peak_dbfs(audio),
        loudness_lufs=integrated_loudness(audio, limits.sample_rate),
    )


def clipped_fraction(audio: np.ndarray, *, level: float, min_run: int) -> float:
    """Fraction of samples that sit at |x| >= level in runs of at least ``min_run`` (same sign)."""
    if audio.size == 0:
        return 0.0
    sign = np.where(audio >= level, 1, np.where(audio <= -level, -1, 0)).astype(np.int8)
    # Run boundaries: wherever the sign changes; a run counts if it is clipped and long enough.
    change = np.flatnonzero(np.diff(sign)) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [sign.size])))
    clipped = (sign[starts] != 0) & (lengths >= min_run)
    return float(lengths[clipped].sum()) / audio.size


def frame_levels_db(audio: np.ndarray, frame: int) -> np.ndarray:
    """RMS level (dBFS) of each ``frame``-sample frame; the last partial frame is zero-padded."""
    n = -(-audio.size // frame)
    padded = np.zeros(n * frame, np.float64)
    padded[: audio.size] = audio
    power = np.mean(padded.reshape(n, frame) ** 2, axis=1)
    return np.asarray(10.0 * np.log10(power + _EPS))


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated (gated) loudness in LUFS: gating ignores pauses, unlike a plain RMS."""
    import pyloudnorm  # imported here: it loads scipy.signal (about a second), which only uploads need

    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(audio, np.float64)))


def _check_stated_duration(data: bytes, limits: ReferenceLimits) -> None:
    """Refuse before decoding when the container states a duration over the limit (no decode bomb)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stated = container.duration  # microseconds, or None
    except (av.FFmpegError, UnicodeDecodeError):
        return  # decode_audio reports it as not_audio
    if stated is not None and stated / 1e6 > limits.max_decoded_s:
        raise InvalidReferenceError(
            "too_long", f"the audio sample is {stated / 1e6:.0f} s long; at most {limits.max_decoded_s:.0f} s"
        )


def _trim(
    audio: np.ndarray, levels: np.ndarray, loudest: float, frame: int, limits: ReferenceLimits
) -> tuple[np.ndarray, np.ndarray]:
    """Cut leading/trailing frames under the trim threshold, keeping a margin; returns the audio and its levels."""
    loud = np.flatnonzero(levels >= loudest + limits.trim_threshold_db)
    margin = round(limits.trim_margin_s * limits.sample_rate)
    start = max(0, int(loud[0]) * frame - margin)
    stop = min(audio.size, (int(loud[-1]) + 1) * frame + margin)
    trimmed = audio[start:stop]
    return trimmed, frame_levels_db(trimmed, frame)


def _speech_frames(levels: np.ndarray, loudest: float, frame: int, limits: ReferenceLimits) -> int:
    """Frames above the speech threshold, plus the short gaps between them."""
    speech = np.flatnonzero(levels >= loudest + limits.speech_threshold_db)
    if speech.size == 0:
        return 0
    max_gap = round(limits.speech_max_gap_s * limits.sample_rate / frame)
    gaps = np.diff(speech) - 1
    return int(speech.size + gaps[gaps <= max_gap].sum())


def _normalise(audio: np.ndarray, limits: ReferenceLimits) -> np.ndarray:
    """Gain to the loudness target, lowered if needed so that the peak stays under the ceiling."""
    loudness = integrated_loudness(audio, limits.sample_rate)
    gain_db = limits.target_lufs - loudness if np.isfinite(loudness) else 0.0
    peak = float(np.max(np.abs(audio)))
    if peak > 0:
        gain_db = min(gain_db, limits.peak_ceiling_dbfs - 20.0 * np.log10(peak))
    return (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def _peak_dbfs(audio: np.ndarray) -> float:
    return float(20.0 * np.log10(float(np.max(np.abs(audio))) + _EPS))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A complete 16-bit mono WAV (real sizes in the header, unlike the streaming encoder's)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float_to_s16le(audio))
    return out.getvalue()
