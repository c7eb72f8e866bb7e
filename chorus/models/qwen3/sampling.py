"""Batched sampling whose draws depend only on the request: its seed and the position of the draw.

Randomness is counter-based: the uniform of a draw is a pure function of (request key, frame, codebook),
computed for the whole batch in one vectorised numpy expression (:func:`draw_uniforms`): the outputs of
SplitMix64 seeded with the request's key, at index ``frame * 256 + codebook``. No generator state is
carried between steps or shared between rows, so a request draws the same uniforms alone, in any batch,
in any KV row, and after any number of joins and leaves.

Each uniform then picks a token by inverse CDF over the kept candidates in vocabulary order (:func:`sample`),
after the processors of the reference ``generate`` (temperature, top-k, top-p; the talker's repetition penalty
and suppressed ids come first, in the backend). Every tensor op is row-wise, so a row's token depends on its own
logits, parameters and uniform only: the batch decides how many rows are computed at once, never a row's
result. Ties at the top-k threshold are all kept (as transformers does), and so are ties at the top-p one; the
CDF runs in vocabulary order, so not even the order a sort gives equal values can change a draw. Temperature 0
means greedy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

# SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of java.util.SplittableRandom and xoshiro).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1
CODEBOOK_STRIDE = 256  # counter = frame * CODEBOOK_STRIDE + codebook: room for every codebook of a frame


@dataclass(frozen=True, slots=True)
class RowSampling:
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # the talker's (code 0); the code predictor has none

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True, slots=True)
class BatchSampling:
    """One batch's sampling parameters and this step's uniforms, on the device: built once per step, before any
    kernel is queued (one host→device copy), and shared by every draw of the step."""

    uniforms: torch.Tensor  # [n, m] float64 in [0, 1): column j feeds draw j of the step
    temperature: torch.Tensor  # [n] float64; 1.0 on greedy rows (never divided by 0)
    top_k: torch.Tensor  # [n] long, >= 1 (clamped to the vocabulary at each draw)
    top_p: torch.Tensor  # [n] float64 in (0, 1]
    repetition_penalty: torch.Tensor  # [n] float64 >= 1
    greedy: torch.Tensor  # [n] bool
    max_top_k: int  # over the sampled rows
    min_top_k: int  # over all rows
    any_top_p: bool
    num_greedy: int

    @classmethod
    def of(
        cls, rows: Sequence[RowSampling], keys: Sequence[int], counters: npt.NDArray[np.uint64], device: torch.device
    ) -> BatchSampling:
        """rows: each row's parameters; keys: its random stream (:func:`request_key`); counters [n, m]: the draws
        of this step (:func:`frame_counters`)."""
        params = np.asarray(
            [(r.temperature, float(max(r.top_k, 1)), r.top_p, r.repetition_penalty) for r in rows], dtype=np.float64
        ).reshape(len(rows), 4)
        table = torch.from_numpy(np.concatenate([params, draw_uniforms(keys, counters)], axis=1)).to(device)
        greedy = table[:, 0] <= 0
        sampled = [r for r in rows if not r.is_greedy]
        return cls(
            uniforms=table[:, 4:],
            temperature=table[:, 0].masked_fill(greedy, 1.0),
            top_k=table[:, 1].long(),
            top_p=table[:, 2],
            repetition_penalty=table[:, 3],
            greedy=greedy,
            max_top_k=max((max(r.top_k, 1) for r in sampled), default=1),
            min_top_k=min(max(r.top_k, 1) for r in rows),
            any_top_p=any(r.top_p < 1.0 for r in sampled),
            num_greedy=len(rows) - len(sampled),
        )


def new_seed() -> int:
    """A random seed for a request that brought none."""
    return int.from_bytes(os.urandom(8), "little")


def request_key(seed: int) -> int:
    """The request's stream key: its seed, mixed (seeds 1, 2, 3 get unrelated streams)."""
    return int(_mix(np.asarray([seed & _MASK64], dtype=np.uint64))[0])


def draw_uniforms(keys: Sequence[int], counters: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """Uniforms in [0, 1), [n, m] float64: row i, column j is draw ``counters[i, j]`` of the stream ``keys[i]``.

    counters: [n, m] uint64, ``frame * CODEBOOK_STRIDE + codebook`` (see :func:`frame_counters`).
    """
    key = np.asarray(keys, dtype=np.uint64)[:, None]
    # uint64 arithmetic wraps modulo 2**64 by definition in numpy (arrays, not scalars: no overflow warning).
    z = _mix(key + (counters + np.uint64(1)) * _GAMMA)
    return np.asarray((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def frame_counters(frames: Sequence[int], codebooks: Sequence[int]) -> npt.NDArray[np.uint64]:
    """[n, len(codebooks)] counters of the draws for codebooks ``codebooks`` of frame ``frames[i]`` in row i."""
    f = np.asarray(frames, dtype=np.uint64)[:, None]
    return np.asarray(f * np.uint64(CODEBOOK_STRIDE) + np.asarray(codebooks, dtype=np.uint64)[None, :])


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return np.asarray(z ^ (z >> np.uint64(31)))


def repetition_penalty_(logits: torch.Tensor, seen: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor for a batch: ids a row drew before (``seen`` [n, vocab] bool)
    get less likely by its penalty ([n]; 1.0 leaves the row as it is, exactly). Returns the new [n, vocab] logits."""
    p = penalties[:, None].to(logits.dtype)
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def sample(logits: torch.Tensor, params: BatchSampling, draw: int) -> torch.Tensor:
    """One token per row: logits [n, vocab] (already penalised/masked), with the uniforms of column ``draw`` of
    ``params.uniforms``. Returns [n] long.

    Works on the batch's ``k = max top_k`` best candidates of each row (all of them without a top-k): a row keeps
    those at or above its own k-th largest score and, under top-p, the most likely of those while the mass above
    them is < top_p (transformers' order: temperature, top-k, top-p). The uniform then walks the kept weights
    ``exp((score - max) / temperature)`` in vocabulary order. Every quantity a row uses is a value of its own
    (its k-th score, its sums) or a sum whose terms past its own candidates are exact zeros added at the end of
    a sequential scan, so the batch's k does not change a row's token (one exception, negligible: an exact tie
    at the row's k-th score that straddles the batch's k-th position).
    """
    n, vocab = logits.shape
    if params.num_greedy == n:
        return logits.argmax(dim=-1)
    k = min(params.max_top_k, vocab)
    # Every row keeps all k candidates when none asks for fewer: no k-th score to find, no order needed (a
    # selection without the sort is cheaper; the candidates are put in vocabulary order below anyway).
    same_k = params.min_top_k >= k and not params.any_top_p
    top, order = logits.topk(k, dim=-1, sorted=not same_k)  # [n, k] (descending unless same_k), and their ids
    scores = top.double()
    weights = ((scores - scores.amax(dim=-1, keepdim=True)) / params.temperature[:, None]).exp()  # [n, k]
    if not same_k:
        kth = top.gather(1, (params.top_k.clamp(max=k) - 1)[:, None])  # the row's k-th largest score
        weights = weights.masked_fill(top < kth, 0.0)
    if params.any_top_p:
        # Nucleus over the weights, still in descending order (zeros at the end): keep a candidate while the mass
        # above it is < top_p of the total; every candidate at least as heavy as the last kept one stays.
        mass = weights.cumsum(dim=-1)
        above = mass - weights
        kept = (above < params.top_p[:, None] * mass[:, -1:]).sum(dim=-1, keepdim=True)  # >= 1
        floor = weights.gather(1, kept - 1).masked_fill(params.top_p[:, None] >= 1.0, 0.0)
        weights = weights.masked_fill(weights < floor, 0.0)
    ids, by_id = order.sort(dim=-1)  # candidates in vocabulary order
    cdf = weights.gather(1, by_id).cumsum(dim=-1)
    target = params.uniforms[:, draw : draw + 1] * cdf[:, -1:]
    # The first candidate whose cumulative weight exceeds the target: never a zero-weight (filtered) one. u < 1
    # (at most 1 - 2**-53) keeps the rounded target below the total, so there always is one (the clamp is a guard).
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=k - 1)
    token = ids.gather(1, pick).squeeze(1)
    if params.num_greedy:
        token = torch.where(params.greedy, logits.argmax(dim=-1), token)
    return token
