"""A dataset's validation report: what each clip is, what is wrong with it, and what is left to train on.

Per clip (measured on the decoded audio, channels averaged, at 16 kHz):

- ``duration_s``, ``sample_rate`` and ``channels`` of the file as uploaded;
- ``speech_s``: WebRTC VAD's speech frames (30 ms) that are also 6 dB above the clip's quietest tenth (the VAD
  alone takes steady noise for speech), with pauses up to 0.3 s between them counted as speech;
- ``clipping``: the fraction of samples in full-scale runs (``chorus.voices.preprocess.clipped_fraction``);
- ``snr_db``: an estimate, the power of the speech frames over that of the pauses between them (None when the
  clip has no pause to measure the noise in; 100 for digital silence between words);
- ``transcript`` (for the sampled clips, ``chorus.finetune.dataset_transcripts``) and ``duplicate_of``.

``problems`` lists codes; those in ``EXCLUDING`` leave the clip out of the training set, the others are
warnings (``clipped``, ``noisy``, ``low_sample_rate``). Duplicates: the same bytes, or the same audio within 5 %
in length: the log spectrogram (100 Hz-4 kHz) between the first and the last 1 % of the clip's energy,
time-normalised (``fingerprint``), at cosine ≥ 0.9. On flite's voices a clip re-encoded (MP3, AAC, Opus),
re-gained, resampled, padded or with noise added scores 0.97-1.0; two different recordings at most 0.76 (the same
sentence by another voice included). The first of a group is kept, the others point at it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import av
import numpy as np

from chorus.audio.decode import decode_audio
from chorus.audio.resample import resample
from chorus.finetune.dataset_transcripts import TranscriptCheck
from chorus.voices.preprocess import ReferenceLimits, clipped_fraction, frame_levels_db

ANALYSIS_RATE = 16_000
MAX_CLIP_S = 60.0  # longer clips are excluded (too_long), and never decoded when the file states its length
MIN_CLIP_SPEECH_S = 0.3
NOISY_DB = 15.0
LOW_SAMPLE_RATE = 16_000
SNR_CAP_DB = 100.0
VAD_FRAME = 480  # 30 ms at 16 kHz
VAD_MAX_GAP_FRAMES = 10  # 0.3 s
NOISE_MARGIN_DB = 6.0
DUPLICATE_SIMILARITY = 0.9
DUPLICATE_LENGTH_RATIO = 1.05
_FP_BANDS, _FP_FRAMES, _FP_WIN, _FP_HOP = 16, 32, 512, 160
_CLIPPING = ReferenceLimits()

EXCLUDING = frozenset(
    {
        "undecodable",
        "too_long",
        "no_speech",
        "missing_transcript",
        "not_in_metadata",
        "missing_file",
        "duplicate_row",
        "duplicate",
        "transcript_mismatch",
    }
)
T = TypeVar("T")


@dataclass(slots=True)
class ClipReport:
    """One clip of the dataset (a metadata row, or an audio file no row names)."""

    file_name: str
    text: str | None
    problems: list[str] = field(default_factory=list)
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    speech_s: float | None = None
    clipping: float | None = None
    snr_db: float | None = None
    sha256: str | None = None
    duplicate_of: str | None = None
    transcript: TranscriptCheck | None = None

    @property
    def is_kept(self) -> bool:
        return not any(p in EXCLUDING for p in self.problems)

    def to_json(self) -> dict[str, object]:
        return {
            "file_name": self.file_name,
            "kept": self.is_kept,
            "problems": list(self.problems),
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "speech_s": self.speech_s,
            "clipping": self.clipping,
            "snr_db": self.snr_db,
            "transcript": self.transcript.to_json() if self.transcript is not None else None,
            "duplicate_of": self.duplicate_of,
        }


def analyse_clip(clip: ClipReport, data: bytes) -> tuple[np.ndarray, float] | None:
    """Measure the clip (filling in ``clip``) and return its duplicate fingerprint, or None when it is excluded."""
    clip.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            clip.sample_rate = int(stream.rate or stream.codec_context.sample_rate)
            clip.channels = int(stream.codec_context.channels)
            stated = container.duration  # microseconds, or None
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        clip.problems.append("undecodable")
        return None
    if stated is not None and stated / 1e6 > MAX_CLIP_S:
        clip.duration_s = round(stated / 1e6, 3)
        clip.problems.append("too_long")
        return None
    try:
        audio, rate = decode_audio(data)
    except ValueError:
        clip.problems.append("undecodable")
        return None
    clip.duration_s = round(audio.size / rate, 3)
    if clip.duration_s > MAX_CLIP_S:
        clip.problems.append("too_long")
        return None
    if not np.all(np.isfinite(audio)):
        clip.problems.append("undecodable")
        return None
    clip.clipping = round(clipped_fraction(audio, level=_CLIPPING.clip_level, min_run=_CLIPPING.clip_min_run), 5)
    x = resample(audio, rate, ANALYSIS_RATE)
    speech = speech_frames(x)
    clip.speech_s = round(float(speech.sum()) * VAD_FRAME / ANALYSIS_RATE, 3)
    clip.snr_db = _snr_db(x, speech)
    if clip.speech_s < MIN_CLIP_SPEECH_S:
        clip.problems.append("no_speech")
    if clip.clipping > _CLIPPING.max_clipped_fraction:
        clip.problems.append("clipped")
    if clip.snr_db is not None and clip.snr_db < NOISY_DB:
        clip.problems.append("noisy")
    if clip.sample_rate < LOW_SAMPLE_RATE:
        clip.problems.append("low_sample_rate")
    return fingerprint(x) if clip.is_kept else None


def speech_frames(x: np.ndarray) -> np.ndarray:
    """[num_frames] bool: 30 ms frames of 16 kHz audio WebRTC's VAD (mode 2) calls speech, short pauses filled."""
    import webrtcvad

    n = x.size // VAD_FRAME
    pcm = (np.clip(x[: n * VAD_FRAME], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    vad = webrtcvad.Vad(2)
    step = 2 * VAD_FRAME
    flags = np.array([vad.is_speech(pcm[i * step : (i + 1) * step], ANALYSIS_RATE) for i in range(n)], bool)
    # The VAD takes steady noise for speech; a frame must also stand out from the clip's quietest frames.
    levels = frame_levels_db(x[: n * VAD_FRAME], VAD_FRAME)
    if n:
        flags &= levels > np.percentile(levels, 10) + NOISE_MARGIN_DB
    on = np.flatnonzero(flags)
    for a, b in itertools.pairwise(on):
        if 1 < b - a <= VAD_MAX_GAP_FRAMES + 1:
            flags[a:b] = True
    return flags


def _snr_db(x: np.ndarray, speech: np.ndarray) -> float | None:
    if not speech.any() or speech.all():
        return None
    frames = np.asarray(x[: speech.size * VAD_FRAME], np.float64).reshape(speech.size, VAD_FRAME)
    power = np.mean(frames**2, axis=1)
    noise = float(power[~speech].mean())
    signal = max(float(power[speech].mean()) - noise, 0.0)
    if noise <= signal * 10 ** (-SNR_CAP_DB / 10):
        return SNR_CAP_DB
    return round(max(0.0, 10.0 * float(np.log10(max(signal, 1e-20) / noise))), 1)


def fingerprint(x: np.ndarray) -> tuple[np.ndarray, float] | None:
    """([bands x frames] unit vector, seconds): the log band energies of 16 kHz audio, 100 Hz-4 kHz, stretched
    to a fixed number of frames, floored 40 dB under their peak (codecs' noise stays below), and the length
    they cover."""
    frame = 160
    energy = np.cumsum(10.0 ** (frame_levels_db(x, frame) / 10.0))
    if energy[-1] <= 0:
        return None
    # Where the first and the last 1 % of the energy lie: unmoved by gain, padding, noise or a codec's delay.
    start, stop = np.searchsorted(energy, energy[-1] * np.array([0.01, 0.99]))
    x = x[int(start) * frame : (int(stop) + 1) * frame]
    if x.size < _FP_WIN:
        return None
    windows = np.lib.stride_tricks.sliding_window_view(x, _FP_WIN)[::_FP_HOP]  # [m, win]
    m = windows.shape[0]
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(_FP_WIN), axis=1)) ** 2
    edges = np.unique(np.geomspace(4, _FP_WIN // 4 + 1, _FP_BANDS + 1).astype(int))
    bands = np.add.reduceat(spectrum[:, : edges[-1]], edges[:-1], axis=1)  # [m, bands]
    db = 10.0 * np.log10(bands + 1e-12)
    db = np.maximum(db, db.max() - 40.0)
    t = np.linspace(0, m - 1, _FP_FRAMES)
    stretched = np.stack([np.interp(t, np.arange(m), db[:, k]) for k in range(db.shape[1])], axis=1)
    v = (stretched - stretched.mean()).ravel()
    norm = float(np.linalg.norm(v))
    return ((v / norm).astype(np.float32), x.size / ANALYSIS_RATE) if norm > 0 else None


def mark_duplicates(clips: Sequence[ClipReport], prints: dict[str, tuple[np.ndarray, float]]) -> None:
    """Flag later copies of a clip: the same bytes, or a fingerprint this close within 5 % in length
    (``prints``: file_name -> ``fingerprint``; candidates compared in order of length)."""
    first_by_hash: dict[str, str] = {}
    by_name = {c.file_name: c for c in clips}
    for clip in clips:
        if clip.sha256 is None or not clip.is_kept:
            continue
        original = first_by_hash.setdefault(clip.sha256, clip.file_name)
        if original != clip.file_name:
            _duplicate(clip, original)
    order = {c.file_name: i for i, c in enumerate(clips)}
    names = sorted((n for n in prints if by_name[n].is_kept), key=lambda n: prints[n][1])
    for i, name in enumerate(names):
        vector, length = prints[name]
        for other in names[i + 1 :]:
            other_vector, other_length = prints[other]
            if other_length > length * DUPLICATE_LENGTH_RATIO:
                break
            a, b = sorted((name, other), key=order.__getitem__)
            if by_name[b].is_kept and float(vector @ other_vector) >= DUPLICATE_SIMILARITY:
                _duplicate(by_name[b], by_name[a].duplicate_of or a)


def _duplicate(clip: ClipReport, original: str) -> None:
    clip.duplicate_of = original
    clip.problems.append("duplicate")


def evenly(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items`` (all of them when there are no more)."""
    if count >= len(items):
        return list(items)
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


def totals(clips: Sequence[ClipReport]) -> dict[str, object]:
    kept = [c for c in clips if c.is_kept]
    problems = Counter(p for c in clips for p in c.problems)
    rates = Counter(str(c.sample_rate) for c in kept)
    return {
        "clips": len(clips),
        "kept": len(kept),
        "excluded": len(clips) - len(kept),
        "speech_minutes": round(sum(c.speech_s or 0.0 for c in kept) / 60.0, 3),
        "audio_minutes": round(sum(c.duration_s or 0.0 for c in kept) / 60.0, 3),
        "sample_rates": dict(sorted(rates.items())),
        "problems": dict(sorted(problems.items())),
    }


def kept_speech_minutes(clips: Sequence[ClipReport]) -> float:
    return sum(c.speech_s or 0.0 for c in clips if c.is_kept) / 60.0
