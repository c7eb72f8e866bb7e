"""Per-slot sampling: each row of a batch has its own parameters and its own RNG.

Mirrors the processors transformers applies in the reference ``generate`` (repetition penalty, minimum
new tokens, suppressed ids, then temperature, top-k, top-p), but row by row, so that a seeded request
draws the same tokens whatever shares its batch. Temperature 0 means greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class RowSampling:
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0


def repetition_penalty_(logits: torch.Tensor, history: list[list[int]], penalties: list[float]) -> None:
    """In place, as transformers' RepetitionPenaltyLogitsProcessor: previously drawn ids get less likely."""
    for row, (tokens, penalty) in enumerate(zip(history, penalties, strict=True)):
        if not tokens or penalty == 1.0:
            continue
        ids = torch.tensor(sorted(set(tokens)), device=logits.device)
        scores = logits[row, ids]
        logits[row, ids] = torch.where(scores < 0, scores * penalty, scores / penalty)


def sample_rows(
    logits: torch.Tensor, rows: list[RowSampling], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """logits: [n, vocab] already penalised/masked. Returns [n] token ids."""
    n, vocab = logits.shape
    out = torch.empty(n, dtype=torch.long, device=logits.device)
    greedy = [i for i, r in enumerate(rows) if r.is_greedy]
    if greedy:
        out[greedy] = logits[greedy].argmax(dim=-1)
    sampled = [i for i, r in enumerate(rows) if not r.is_greedy]
    if not sampled:
        return out
    scores = logits[sampled].float()
    temps = torch.tensor([rows[i].temperature for i in sampled], device=scores.device)
    scores = scores / temps[:, None]
    # top-k (per row; k >= vocab keeps everything)
    ks = torch.tensor([min(max(rows[i].top_k, 1), vocab) for i in sampled], device=scores.device)
    sorted_desc = scores.sort(dim=-1, descending=True).values
    kth = sorted_desc.gather(1, (ks - 1)[:, None])
    scores = scores.masked_fill(scores < kth, float("-inf"))
    # top-p (nucleus), as transformers: drop the low tail whose mass is <= 1 - top_p, keep at least one
    ps = torch.tensor([rows[i].top_p for i in sampled], device=scores.device)
    if bool((ps < 1.0).any()):
        sorted_asc, order = scores.sort(dim=-1, descending=False)
        cumulative = sorted_asc.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - ps)[:, None]
        remove_sorted[:, -1] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        scores = scores.masked_fill(remove & (ps < 1.0)[:, None], float("-inf"))
    probs = scores.softmax(dim=-1)
    for j, i in enumerate(sampled):
        out[i] = torch.multinomial(probs[j], 1, generator=generators[i]).squeeze(0)
    return out
