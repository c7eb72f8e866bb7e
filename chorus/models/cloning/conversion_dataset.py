"""Fitting a :class:`ConversionModel` on a dataset: minutes of one speaker's speech with exact transcripts.

The one-clip fit (``ConversionModel.fit``) pairs a few seconds of the target with the base voice saying the same
words. Here every clip is such a pair (the base voice renders each clip's transcript), so the same model is
fitted on far more frames:

1. each clip and its rendering are analysed with WORLD, in a seeded random order, and their speech frames kept as
   coded envelopes (23 coefficients a frame: minutes of speech take a few MB; the full envelopes are dropped);
2. the frequency warp is chosen, as in the one-clip fit, on each of the first ``WARP_CLIPS`` clips analysed, and
   the median taken (the warp is one vocal-tract-length factor: a few clips pin it down, and each choice costs
   seven DTWs);
3. the log-F0 statistics of each speaker are taken over all clips;
4. frames are paired by DTW within each clip (never across the concatenation: DTW's cost matrix is quadratic in
   the frames), first on per-clip normalised coefficients, then after converting with the last fit; the pairs of
   all clips are concatenated and, beyond ``max_pairs``, sampled uniformly (seeded) before the joint GMM is fitted,
   so minutes of data fit in bounded time and memory. The GMM is the one-clip fit's (16 mixtures, the same blend
   of regression and per-dimension maps, global variance) with a lower covariance floor (``GMM_REG``).

Clips that cannot be paired are skipped with a reason: too little speech, longer than DTW's memory bound, or a
rendering whose length is far from the clip's (a transcript that does not match its audio).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chorus.models.cloning import alignment, conversion, world
from chorus.models.cloning.conversion import (
    DTW_ITERATIONS,
    ConversionModel,
    _log_f0_stats,
    _prepare,
    _speech_indices,
)

WARP_CLIPS = 5
MIXTURES = conversion.MIXTURES
# The covariance floor (x each dimension's variance): the one-clip fit needs 0.3 on a few hundred frames; thousands
# of pairs support a lower one. Chosen on the development speakers of ``chorus bench-voices`` (kal, ked, slt HTS;
# ~3.5 min each, 6 held-out clips, gain over a 10-12 s one-clip registration): floor 0.3 +0.009 mean similarity,
# 0.1 +0.020, 0.03 +0.020; 32 mixtures +0.015 (0.3) / +0.024 (0.1); regression weight 1.0 +0.016 (0.3) / +0.025
# (0.1), not taken: the weight was set for word accuracy, which was not re-measured on the development set.
GMM_REG = 0.1
MAX_PAIRS = 12_000  # GMM input: EM on 12k x 46 takes ~10 s a fit on one core, k-means' distances ~70 MB
# DTW holds (source frames x target frames x 23) float64 differences: 2.1M cells ~ 390 MB (~17 s of speech each).
MAX_DTW_CELLS = 2_100_000
MAX_LENGTH_RATIO = 2.5  # DTW lets the target run at most three times as fast as the source, or stall

__all__ = ["DatasetFit", "ParallelClip", "fit_dataset"]


@dataclass(frozen=True, slots=True)
class ParallelClip:
    """One clip of the target speaker and its exact transcript."""

    name: str
    audio: np.ndarray  # mono float
    sample_rate: int
    text: str


@dataclass(frozen=True, slots=True)
class DatasetFit:
    model: ConversionModel
    clips_used: tuple[str, ...]  # in dataset order
    clips_skipped: dict[str, str]  # name -> why
    warps: tuple[float, ...]  # the warp each of the warp clips chose; ``model.warp`` is their median
    num_pairs: int  # DTW pairs of the last alignment, all clips
    num_gmm_frames: int  # pairs the last GMM was fitted on (at most ``max_pairs``)


@dataclass(frozen=True, slots=True)
class _Frames:
    """One clip's speech frames: coded envelopes without c0 and the voiced F0 of each speaker."""

    index: int
    x: np.ndarray  # [Tx, ORDER - 1] the warped base voice
    y: np.ndarray  # [Ty, ORDER - 1] the target
    f0_x: np.ndarray  # voiced F0 (Hz) of the base voice
    f0_y: np.ndarray


def fit_dataset(
    clips: Sequence[ParallelClip],
    render: Callable[[str], np.ndarray],
    *,
    sample_rate: int,
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> DatasetFit:
    """Fit the parallel conversion on every usable clip. ``render(text)`` is the base voice saying ``text`` at
    ``sample_rate``. ``on_progress(stage, done, total)`` is called after each clip analysed (stage "analyse")
    and each fit ("fit"); an exception it raises (e.g. to stop) propagates. The result depends on ``seed``
    only (clip order for the warp, pair sampling): the same inputs and seed give the same model."""
    if max_pairs < 2 * MIXTURES:
        raise ValueError(f"max_pairs must be at least {2 * MIXTURES}")
    rng = np.random.default_rng(seed)
    frames: list[_Frames] = []
    skipped: dict[str, str] = {}
    warps: list[float] = []
    warp: float | None = None
    # The warp clips, their source envelopes kept until the warp is chosen.
    pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    order = rng.permutation(len(clips))
    for done, index in enumerate(order, start=1):
        clip = clips[int(index)]
        try:
            sp, y, f0_x, f0_y = _analyse(clip, render, sample_rate)
        except ValueError as e:
            skipped[clip.name] = str(e)
        else:
            if warp is None:
                warps.append(alignment.dtw_warp(sp, y, sample_rate))
                pending.append((int(index), sp, y, f0_x, f0_y))
                if len(warps) == WARP_CLIPS:
                    warp = float(np.median(warps))
                    frames += [_Frames(i, _code(s, warp, sample_rate), yy, fx, fy) for i, s, yy, fx, fy in pending]
                    pending = []
            else:
                frames.append(_Frames(int(index), _code(sp, warp, sample_rate), y, f0_x, f0_y))
        if on_progress is not None:
            on_progress("analyse", done, len(clips))
    if warp is None and warps:  # fewer usable clips than WARP_CLIPS
        warp = float(np.median(warps))
        frames += [_Frames(i, _code(s, warp, sample_rate), yy, fx, fy) for i, s, yy, fx, fy in pending]
    if warp is None or not frames:
        raise ValueError("no clip of the dataset could be paired with the base voice: " + _reasons(skipped))
    frames.sort(key=lambda f: f.index)
    f0_stats = np.concatenate(
        [
            _log_f0_stats(np.concatenate([f.f0_x for f in frames]), "source"),
            _log_f0_stats(np.concatenate([f.f0_y for f in frames]), "target"),
        ]
    )
    model, num_pairs, num_fit = _fit_pairs(frames, sample_rate, f0_stats, warp, rng, max_pairs, on_progress)
    return DatasetFit(
        model=model,
        clips_used=tuple(clips[f.index].name for f in frames),
        clips_skipped={name: skipped[name] for name in (c.name for c in clips) if name in skipped},
        warps=tuple(warps),
        num_pairs=num_pairs,
        num_gmm_frames=num_fit,
    )


def _analyse(
    clip: ParallelClip, render: Callable[[str], np.ndarray], sample_rate: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the base voice's speech envelopes [Tx, bins], the target's coded speech frames [Ty, ORDER - 1], voiced F0
    of each); ValueError when the clip cannot be paired."""
    tgt = _prepare(clip.audio, clip.sample_rate, sample_rate, "target")
    src = _prepare(render(clip.text), sample_rate, sample_rate, "source")
    tf = world.analyse(tgt, sample_rate)
    sf = world.analyse(src, sample_rate)
    x_speech, y_speech = _speech_indices(sf, tf)
    n, m = len(x_speech), len(y_speech)
    ratio = max(n, m) / min(n, m)
    if ratio > MAX_LENGTH_RATIO:
        raise ValueError(
            f"the base voice's rendering has {n} speech frames and the clip {m}: the transcript may not match"
        )
    if n * m > MAX_DTW_CELLS:
        seconds = np.sqrt(MAX_DTW_CELLS) * world.HOP / sample_rate
        raise ValueError(f"too long to align (more than about {seconds:.0f} s of speech)")
    y = world.coded(tf.sp[y_speech], sample_rate)[0][:, 1:]
    return sf.sp[x_speech], y, sf.f0[sf.f0 > 0], tf.f0[tf.f0 > 0]


def _code(sp: np.ndarray, warp: float, sample_rate: int) -> np.ndarray:
    """The base voice's envelopes, frequency-warped, as coded features without c0 (as the one-clip fit)."""
    return world.coded(world.apply_warp(sp, *world.warp_table(warp, sample_rate)), sample_rate)[0][:, 1:]


def _fit_pairs(
    frames: Sequence[_Frames],
    sample_rate: int,
    f0_stats: np.ndarray,
    warp: float,
    rng: np.random.Generator,
    max_pairs: int,
    on_progress: Callable[[str, int, int], None] | None,
) -> tuple[ConversionModel, int, int]:
    """``ConversionModel._fit_pairs`` with DTW per clip: align each clip (normalised, then converted), fit the
    joint GMM on the concatenated pairs (sampled down to ``max_pairs``), repeat."""
    pairs = [alignment.dtw_pairs(alignment.normalise(f.x), alignment.normalise(f.y)) for f in frames]
    model: ConversionModel | None = None
    num_pairs = num_fit = 0
    for iteration in range(DTW_ITERATIONS):
        x = np.concatenate([f.x[p[:, 0]] for f, p in zip(frames, pairs, strict=True)])
        y = np.concatenate([f.y[p[:, 1]] for f, p in zip(frames, pairs, strict=True)])
        num_pairs = len(x)
        if num_pairs > max_pairs:
            keep = np.sort(rng.choice(num_pairs, max_pairs, replace=False))
            x, y = x[keep], y[keep]
        num_fit = len(x)
        gmm = alignment.fit_gmm(np.hstack([x, y]), MIXTURES, reg=GMM_REG)
        model = ConversionModel._from_gmm("parallel", sample_rate, f0_stats, warp, gmm, x, y)
        if on_progress is not None:
            on_progress("fit", iteration + 1, DTW_ITERATIONS)
        if iteration + 1 < DTW_ITERATIONS:  # the one-clip fit's last re-alignment is never used
            pairs = [alignment.dtw_pairs(model._map(f.x), f.y) for f in frames]
    if model is None:
        raise RuntimeError("DTW_ITERATIONS must be at least 1")
    return model, num_pairs, num_fit


def _reasons(skipped: dict[str, str]) -> str:
    shown = "; ".join(f"{name}: {why}" for name, why in list(skipped.items())[:3])
    return shown + (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else "") if shown else "no clips"
