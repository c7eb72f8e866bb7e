"""Objective measures of how far one rendering of a sentence is from another: mel-cepstral distortion and word
error rate. Pure numpy/pyworld; the quality gate (chorus.bench.quality_gate) combines them.

Mel-cepstral distortion (MCD), as computed here:

* both signals are resampled to 16 kHz (so every backend's rate is measured on the same 0-8 kHz band);
* WORLD analysis (``pyworld`` dio + stonemask F0, cheaptrick envelope) every 5 ms, each signal on its own;
* mel-cepstrum: the cosine transform of the natural-log *amplitude* envelope (½ ln of WORLD's power envelope)
  sampled on an all-pass-warped frequency axis (α = 0.42, the usual mel approximation at 16 kHz), i.e. what
  SPTK's ``freqt`` gives for the envelope's cepstrum; coefficients c1..c24 (c0, the level, is excluded);
* per frame ``(10 / ln 10) · sqrt(2 · Σ_d (c_d − c'_d)²)`` dB, averaged over speech frames: frames whose
  reference envelope energy is more than 40 dB under the reference's loudest frame are left out;
* frame pairing: signals of equal length (± one frame) are compared frame by frame (a Piper candidate has the
  reference's durations); otherwise a dynamic-time-warping path (steps (1,1), (1,2), (2,1)) pairs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyworld
import soxr

from chorus.consent.phrases import edit_distance

ANALYSIS_RATE = 16_000
FRAME_PERIOD_MS = 5.0
MCEP_ORDER = 24  # c1..c24 enter the distance
MCEP_ALPHA = 0.42  # all-pass constant approximating the mel scale at 16 kHz
SILENCE_BELOW_PEAK_DB = 40.0
_WARP_POINTS = 512
_MCD_SCALE = 10.0 / np.log(10.0) * np.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Cepstra:
    """Mel-cepstra of one signal: ``coefficients`` [T, MCEP_ORDER + 1] (c0 first), ``energy_db`` [T]."""

    coefficients: np.ndarray
    energy_db: np.ndarray


def mel_cepstra(audio: np.ndarray, sample_rate: int) -> Cepstra:
    """WORLD envelope → mel-cepstrum per 5 ms frame (see the module docstring)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if sample_rate != ANALYSIS_RATE:
        x = soxr.resample(x, sample_rate, ANALYSIS_RATE, quality="HQ")
    if x.size < ANALYSIS_RATE // 20:
        raise ValueError("audio too short for mel-cepstral analysis (under 50 ms)")
    x = np.ascontiguousarray(x)
    f0, times = pyworld.dio(x, ANALYSIS_RATE, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, ANALYSIS_RATE)
    sp = pyworld.cheaptrick(x, f0, times, ANALYSIS_RATE)  # [T, fft // 2 + 1] power
    sp = np.maximum(sp, 1e-16)
    energy_db = 10.0 * np.log10(np.mean(sp, axis=1))
    log_amplitude = 0.5 * np.log(sp)
    grid, transform = _warp_tables(sp.shape[1])
    warped = np.stack([np.interp(grid, np.linspace(0.0, np.pi, sp.shape[1]), row) for row in log_amplitude])
    return Cepstra(warped @ transform.T, energy_db)


def _warp_tables(bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(linear frequencies at which to sample the envelope, [order + 1, points] cosine-transform matrix)."""
    warped = np.linspace(0.0, np.pi, _WARP_POINTS)
    # The inverse all-pass map: linear frequency for each point of the warped (mel-like) axis.
    linear = warped - 2.0 * np.arctan(MCEP_ALPHA * np.sin(warped) / (1.0 + MCEP_ALPHA * np.cos(warped)))
    weights = np.full(_WARP_POINTS, 1.0 / (_WARP_POINTS - 1))  # trapezoid rule over [0, π], divided by π
    weights[[0, -1]] *= 0.5
    order = np.arange(MCEP_ORDER + 1)[:, None]
    transform = np.cos(order * warped[None, :]) * weights[None, :]
    # L(ω) = c0 + 2 Σ c_m cos(mω): c_m = (1/π) ∫ L cos(mω) dω, the same expression for c0 and the rest.
    return linear, transform


def frame_distances(reference: Cepstra, candidate: Cepstra) -> np.ndarray:
    """MCD in dB of each paired speech frame (see the module docstring for the pairing)."""
    ref, cand = reference.coefficients[:, 1:], candidate.coefficients[:, 1:]
    if abs(ref.shape[0] - cand.shape[0]) <= 1:
        n = min(ref.shape[0], cand.shape[0])
        pairs = np.arange(n), np.arange(n)
    else:
        pairs = dtw_path(_pairwise(ref, cand))
    distances = _MCD_SCALE * np.sqrt(np.sum((ref[pairs[0]] - cand[pairs[1]]) ** 2, axis=1))
    energy = reference.energy_db
    speech = energy[pairs[0]] >= energy.max() - SILENCE_BELOW_PEAK_DB
    return np.asarray(distances[speech])


def mel_cepstral_distortion(reference: np.ndarray, candidate: np.ndarray, sample_rate: int) -> float:
    """Mean MCD (dB) of ``candidate`` against ``reference``, both mono float audio at ``sample_rate``."""
    return float(np.mean(frame_distances(mel_cepstra(reference, sample_rate), mel_cepstra(candidate, sample_rate))))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = np.sum(a**2, axis=1)[:, None] + np.sum(b**2, axis=1)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.sqrt(np.maximum(squared, 0.0)))


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-cost path through ``cost`` [N, M] from (0, 0) to (N-1, M-1) with steps (1,1), (1,2), (2,1) (local
    slope between ½ and 2). Rows only depend on the two before them, so each row is one vectorised update.
    Raises ValueError when the lengths differ by more than a factor of two (no such path exists)."""
    n, m = cost.shape
    if not (m <= 2 * n - 1 and n <= 2 * m - 1):
        raise ValueError(f"cannot align {n} frames with {m} frames (more than a factor of two apart)")
    total = np.full((n, m), np.inf)
    step = np.zeros((n, m), dtype=np.int8)  # 0: from (i-1, j-1); 1: from (i-1, j-2); 2: from (i-2, j-1)
    total[0, 0] = cost[0, 0]
    for i in range(1, n):
        options = np.full((3, m), np.inf)
        options[0, 1:] = total[i - 1, :-1]
        options[1, 2:] = total[i - 1, :-2]
        if i >= 2:
            options[2, 1:] = total[i - 2, :-1]
        step[i] = np.argmin(options, axis=0)
        total[i] = cost[i] + options[step[i], np.arange(m)]
    if not np.isfinite(total[-1, -1]):
        raise ValueError(f"cannot align {n} frames with {m} frames")
    i, j = n - 1, m - 1
    rows, cols = [i], [j]
    while (i, j) != (0, 0):
        di, dj = ((1, 1), (1, 2), (2, 1))[int(step[i, j])]
        i, j = i - di, j - dj
        rows.append(i)
        cols.append(j)
    return np.asarray(rows[::-1]), np.asarray(cols[::-1])


# -- words ----------------------------------------------------------------------------------------------------


def normalise_words(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes inside words kept): the words a recogniser is scored on."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance in words (substitutions + deletions + insertions)."""
    return edit_distance(reference, hypothesis)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: word errors over all sentences / words in all reference sentences."""
    if len(references) != len(hypotheses):
        raise ValueError("one hypothesis per reference sentence")
    words = sum(len(normalise_words(r)) for r in references)
    if words == 0:
        raise ValueError("the reference sentences have no words")
    pairs = zip(references, hypotheses, strict=True)
    errors = sum(word_errors(normalise_words(r), normalise_words(h)) for r, h in pairs)
    return errors / words
