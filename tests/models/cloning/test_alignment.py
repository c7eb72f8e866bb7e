"""Frame pairing for the conversion fit (chorus.models.cloning.alignment) and the maps fitted on the pairs."""

from __future__ import annotations

import numpy as np

from chorus.models.cloning import alignment
from chorus.models.cloning.conversion import ConversionModel
from chorus.models.cloning.world import ORDER

K = ORDER - 1  # coefficients the conversion maps


def _trajectory(num_frames: int, seed: int) -> np.ndarray:
    """A smooth random walk through coefficient space: every frame distinct, neighbours alike (like speech)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((num_frames, K)), axis=0)


def test_nearest_pairs_take_every_frame_of_both_speakers() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, K)), 2.0 + rng.standard_normal((120, K))
    pairs = alignment.nearest_pairs(x, y)
    assert set(pairs[:, 0]) == set(range(len(x))) and set(pairs[:, 1]) == set(range(len(y)))
    distances = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
    for i, j in pairs:
        assert distances[i, j] == distances[i].min() or distances[i, j] == distances[:, j].min()


def test_dtw_pairs_reach_every_frame_of_a_slower_target() -> None:
    x = _trajectory(80, seed=2)
    y = np.repeat(x, 2, axis=0)  # the target says the same, twice as slowly
    one_way = alignment.dtw(x, y)[0]
    assert len(set(one_way[:, 1])) <= len(x) < len(y)  # half the target never reaches the fit
    pairs = alignment.dtw_pairs(x, y)
    assert set(pairs[:, 0]) == set(range(len(x))) and set(pairs[:, 1]) == set(range(len(y)))
    # Every pair is right: frame i of the source is frames 2i and 2i+1 of the target.
    assert np.all(np.abs(pairs[:, 1] // 2 - pairs[:, 0]) <= 1)


def test_a_mixture_keeps_the_source_articulation_where_the_regression_finds_none() -> None:
    """Source and target coefficients that do not correlate within a mixture (too few frames to tell): the
    regression alone maps every frame to the target's mean; the blended map keeps each frame's own deviation,
    moved to the target's mean and spread."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, K))
    y = 3.0 + 2.0 * rng.standard_normal((600, K))
    gmm = alignment.fit_gmm(np.hstack([x, y]), mixtures=1)
    regression = np.linalg.solve(gmm.covs[0, :K, :K], gmm.covs[0, :K, K:]).T  # E[y | x]'s slope: about zero
    assert np.abs(regression).max() < 0.3
    f0_stats = np.array([np.log(120.0), 0.2, np.log(200.0), 0.2])
    model = ConversionModel._from_gmm("parallel", 22050, f0_stats, 1.0, gmm, x, y)
    out = model._map(x)
    assert np.allclose(out.mean(axis=0), 3.0, atol=0.3)
    assert np.all(out.std(axis=0) > 1.0)  # not collapsed onto the mean
    correlation = [np.corrcoef(x[:, d], out[:, d])[0, 1] for d in range(K)]
    assert min(correlation) > 0.75  # each output follows its own source coefficient
