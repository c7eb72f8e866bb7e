"""WORLD analysis on chorus's frame grid: F0, spectral envelope and aperiodicity; the coded envelope (a
mel-cepstrum) the conversion maps; a vocal-tract-length frequency warp of the envelope."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld

HOP = 256  # samples between WORLD frames (11.6 ms at 22050 Hz; Piper's own hop)
FFT_SIZE = 1024  # cheaptrick's window needs fft_size >= 3 * fs / f0_floor
F0_FLOOR = 65.0
F0_CEIL = 500.0
ORDER = 24  # coded envelope dimensions (c0 + 23 coefficients that carry the speaker)


@dataclass(frozen=True)
class Features:
    """WORLD analysis of one signal on the frame grid."""

    f0: np.ndarray  # (T,) Hz, 0 where unvoiced
    sp: np.ndarray  # (T, FFT_SIZE // 2 + 1) power envelope
    ap: np.ndarray  # (T, FFT_SIZE // 2 + 1) aperiodicity


def analyse(audio: np.ndarray, sample_rate: int) -> Features:
    x = np.ascontiguousarray(audio, dtype=np.float64)
    period = frame_period(sample_rate)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=period)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    sp = pyworld.cheaptrick(x, f0, times, sample_rate, f0_floor=F0_FLOOR, fft_size=FFT_SIZE)
    ap = pyworld.d4c(x, f0, times, sample_rate, fft_size=FFT_SIZE)
    return Features(f0, sp, ap)


def frame_period(sample_rate: int) -> float:
    return 1000.0 * HOP / sample_rate


def coded(sp: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(coded envelope (T, ORDER), the envelope it decodes back to): the mapping's features and the reference
    for the difference filter."""
    coded = pyworld.code_spectral_envelope(np.ascontiguousarray(sp), sample_rate, ORDER)
    return coded, pyworld.decode_spectral_envelope(coded, sample_rate, FFT_SIZE)


def warp_table(warp: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Source bin for each output bin of a piecewise-linear warp: formants scaled by ``warp`` up to 70 % of
    Nyquist, the rest squeezed or stretched to end at Nyquist (so no band is lost or left empty)."""
    bins = FFT_SIZE // 2 + 1
    out = np.arange(bins, dtype=np.float64)
    knee = 0.7 * (bins - 1)
    src = np.where(out <= knee, out / warp, knee / warp + (out - knee) * ((bins - 1) - knee / warp) / (bins - 1 - knee))
    src = np.clip(src, 0, bins - 1)
    index = np.minimum(np.floor(src).astype(np.int64), bins - 2)
    return index, src - index


def apply_warp(sp: np.ndarray, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
    if np.all(frac == 0) and np.array_equal(index[:-1], np.arange(index.size - 1)):
        return sp
    log_sp = np.log(sp)
    return np.asarray(np.exp(log_sp[:, index] * (1.0 - frac) + log_sp[:, index + 1] * frac))
