"""The counter-based batched sampler: draws depend on (seed, frame, codebook) only, with the right distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")
logits_process = pytest.importorskip("transformers.generation.logits_process")

import torch  # noqa: E402

from chorus.models.qwen3.sampling import (  # noqa: E402
    BatchSampling,
    RowSampling,
    draw_uniforms,
    frame_counters,
    repetition_penalty_,
    request_key,
    sample,
)

CPU = torch.device("cpu")


def chi2_limit(df: int, z: float = 4.75) -> float:
    """The chi-square value a fair sample exceeds with probability ~1e-6 (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float((((counts - expected) ** 2)[probs > 0] / expected[probs > 0]).sum())


def reference_probs(logits: torch.Tensor, row: RowSampling) -> np.ndarray:
    """transformers' own warpers (temperature, top-k, top-p) then softmax: the distribution generate() samples."""
    x = logits[None].double().clone()
    x = logits_process.TemperatureLogitsWarper(row.temperature)(None, x)
    x = logits_process.TopKLogitsWarper(row.top_k)(None, x)
    if row.top_p < 1.0:
        x = logits_process.TopPLogitsWarper(row.top_p)(None, x)
    return np.asarray(x.softmax(dim=-1)[0].numpy())


def test_uniforms_are_a_function_of_key_and_counter_only() -> None:
    keys = [request_key(s) for s in (7, 8, 7, 2**63 - 1)]
    counters = frame_counters([3, 3, 3, 0], range(16))
    u = draw_uniforms(keys, counters)
    assert u.shape == (4, 16) and u.dtype == np.float64
    assert ((u >= 0) & (u < 1)).all()
    np.testing.assert_array_equal(u[0], u[2])  # same seed and frame, other row
    alone = draw_uniforms([keys[0]], frame_counters([3], range(16)))[0]
    np.testing.assert_array_equal(u[0], alone)  # alone or in a batch
    assert not np.array_equal(u[0], u[1])  # seeds 7 and 8: unrelated streams
    later = draw_uniforms([keys[0]], frame_counters([4], range(16)))[0]
    assert len(set(later) & set(u[0])) == 0  # the next frame draws new numbers


def test_uniforms_are_uniform_and_uncorrelated() -> None:
    # 64 seeds x 250 frames x 16 codebooks: the draws a busy server makes.
    keys = [request_key(s) for s in range(64)]
    u = np.concatenate([draw_uniforms(keys, frame_counters([f] * 64, range(16))).ravel() for f in range(250)])
    counts, _ = np.histogram(u, bins=100, range=(0.0, 1.0))
    assert chi2(counts, np.full(100, 0.01)) < chi2_limit(99)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring codebooks/frames/seeds
    # Consecutive seeds start unrelated streams (the seed is mixed first).
    first = draw_uniforms(keys, frame_counters([0] * 64, [0]))[:, 0]
    assert abs(np.corrcoef(np.arange(64), first)[0, 1]) < 0.4


@pytest.mark.parametrize(
    "row",
    [
        RowSampling(0.9, 50, 1.0),
        RowSampling(0.7, 12, 1.0),
        RowSampling(1.3, 40, 0.8),
        RowSampling(1.0, 5, 0.5),
        RowSampling(0.8, 4096, 0.9),  # top-k larger than the vocabulary: nucleus only
    ],
    ids=["default", "top-k", "top-k+top-p", "tight", "top-p-only"],
)
def test_draws_follow_the_reference_distribution(row: RowSampling) -> None:
    vocab, draws = 64, 40_000
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(3)) * 2
    probs = reference_probs(logits, row)
    # One request's draws for codebook 5 of frames 0..draws-1, as one batch.
    params = BatchSampling.of([row] * draws, [request_key(11)] * draws, frame_counters(range(draws), [5]), CPU)
    tokens = sample(logits.expand(draws, vocab).contiguous(), params, draw=0).numpy()
    counts = np.bincount(tokens, minlength=vocab)
    assert counts[probs == 0].sum() == 0  # a filtered token is never drawn
    assert chi2(counts, probs) < chi2_limit(int((probs > 0).sum()) - 1)


def test_a_row_draws_the_same_token_in_any_batch_and_any_row() -> None:
    gen = torch.Generator().manual_seed(0)
    vocab = 300
    rows = [
        RowSampling(0.9, 50, 1.0),
        RowSampling(0.6, 7, 0.9),
        RowSampling(0.0, 50, 1.0),  # greedy
        RowSampling(1.2, 200, 0.95),
        RowSampling(1.0, 1, 1.0),
    ]
    keys = [request_key(seed) for seed in range(len(rows))]
    for trial in range(40):
        logits = torch.randn(len(rows), vocab, generator=gen)
        counters = frame_counters([trial] * len(rows), [0, 3])  # two draws per row: codebooks 0 and 3
        batch = BatchSampling.of(rows, keys, counters, CPU)
        batched = [sample(logits, batch, draw) for draw in (0, 1)]
        for i in range(len(rows)):
            alone = BatchSampling.of([rows[i]], [keys[i]], counters[i : i + 1], CPU)
            for draw in (0, 1):
                assert int(sample(logits[i : i + 1], alone, draw)) == int(batched[draw][i])
        order = torch.randperm(len(rows), generator=gen).tolist()
        shuffled = BatchSampling.of([rows[i] for i in order], [keys[i] for i in order], counters[order], CPU)
        assert torch.equal(sample(logits[order], shuffled, 1), batched[1][order])


def test_greedy_rows_take_the_argmax_and_top_k_one_is_greedy() -> None:
    logits = torch.randn(6, 100, generator=torch.Generator().manual_seed(1))
    rows = [RowSampling(0.0), RowSampling(0.9, 1, 1.0), RowSampling(0.9)] * 2
    params = BatchSampling.of(rows, [request_key(s) for s in range(6)], frame_counters([2] * 6, [0]), CPU)
    tokens = sample(logits, params, draw=0)
    argmax = logits.argmax(dim=-1)
    assert tokens[[0, 1, 3, 4]].tolist() == argmax[[0, 1, 3, 4]].tolist()


def test_different_seeds_draw_different_tokens() -> None:
    logits = torch.zeros(1, 1000).expand(64, 1000).contiguous()  # flat: every token equally likely
    keys = [request_key(s) for s in range(64)]
    params = BatchSampling.of([RowSampling(1.0, 1000, 1.0)] * 64, keys, frame_counters([0] * 64, [0]), CPU)
    assert len(set(sample(logits, params, draw=0).tolist())) > 50


def test_repetition_penalty_matches_transformers() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 50, generator=gen)
    history = [[1, 5, 5, 7], [], [0, 49]]
    penalties = [1.05, 1.3, 2.0]
    seen = torch.zeros(3, 50, dtype=torch.bool)
    for row, ids in enumerate(history):
        seen[row, ids] = True
    ours = repetition_penalty_(logits, seen, torch.tensor(penalties, dtype=torch.float64))
    for row, (ids, penalty) in enumerate(zip(history, penalties, strict=True)):
        if not ids:
            torch.testing.assert_close(ours[row], logits[row], rtol=0, atol=0)
            continue
        processor = logits_process.RepetitionPenaltyLogitsProcessor(penalty)
        theirs = processor(torch.tensor([ids]), logits[row : row + 1].clone())[0]
        torch.testing.assert_close(ours[row], theirs, rtol=0, atol=0)
