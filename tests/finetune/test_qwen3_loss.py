"""The predictor loss is aligned with serving: head j is scored on codebook j+1 from the logits the served code
predictor computes; qwen-tts's own fine-tune helper is off by one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.finetune.conftest import qwen3_missing

if missing := qwen3_missing():
    pytest.skip(f"not installed: {', '.join(missing)} (the qwen extra)", allow_module_level=True)

import torch
import torch.nn.functional as F

from chorus.finetune.qwen3_loss import (
    compute_losses,
    input_embeddings,
    predictor_logits,
    predictor_loss,
    talker_hidden,
    talker_loss,
)
from chorus.finetune.qwen3_samples import SpecialIds, TrainingBatch, TrainingExample, collate
from chorus.models.qwen3.predictor import CodePredictor


def frames_and_hidden(tts: Any, examples: list[TrainingExample]) -> tuple[TrainingBatch, torch.Tensor]:
    batch = collate(examples[:2], SpecialIds.from_config(tts.model.config))
    talker = tts.model.talker
    hidden = talker_hidden(talker, input_embeddings(talker, batch), batch.attention_mask)
    return batch, hidden


def served_logits(talker: Any, hidden: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor]:
    """Logits of codebooks 1..15 as the server's CodePredictor computes them, one code at a time, fed the
    true codes (teacher forcing through its ``choose`` callback)."""
    n = codes.shape[0]
    predictor = CodePredictor(talker.code_predictor, max_slots=n, dtype=torch.float32, device=torch.device("cpu"))
    seen: list[torch.Tensor] = []

    def choose(j: int, logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits)
        return codes[:, j + 1]

    inputs = torch.stack([hidden, talker.get_input_embeddings()(codes[:, 0])], dim=1)
    predictor(inputs, choose)
    return seen


def test_predictor_loss_is_the_hand_computed_cross_entropy_of_served_logits(
    tts: Any, examples: list[TrainingExample]
) -> None:
    talker = tts.model.talker
    with torch.no_grad():
        batch, hidden = frames_and_hidden(tts, examples)
        h, codes = hidden[batch.target_mask], batch.target_codes[batch.target_mask]
        logits = served_logits(talker, h, codes)
        terms = []
        for t in range(codes.shape[0]):  # every frame, every head, one cross-entropy at a time
            for j in range(15):
                terms.append(F.cross_entropy(logits[j][t], codes[t, j + 1]))
        by_hand = torch.stack(terms).mean()
        ours = predictor_loss(talker, h, codes)
        ours_logits = predictor_logits(talker, h, codes)
    assert len(terms) == 15 * sum(e.num_frames for e in examples[:2])
    torch.testing.assert_close(ours_logits, torch.stack(logits, dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=1e-5)


def test_the_library_helper_scores_the_next_codebook(tts: Any, examples: list[TrainingExample]) -> None:
    """``forward_sub_talker_finetune`` computes the same logits, but its causal-LM loss shifts the labels once
    more: head j is scored on codebook j+2, and the last head on nothing."""
    talker = tts.model.talker
    with torch.no_grad():
        batch, hidden = frames_and_hidden(tts, examples)
        h, codes = hidden[batch.target_mask], batch.target_codes[batch.target_mask]
        lib_logits, lib_loss = talker.forward_sub_talker_finetune(codes, h)
        ours = predictor_loss(talker, h, codes)
        logits = predictor_logits(talker, h, codes)
        shifted = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), codes[:, 2:].reshape(-1))
    torch.testing.assert_close(lib_logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(lib_loss, shifted, rtol=0, atol=1e-5)
    assert abs(float(lib_loss) - float(ours)) > 1e-3


def test_talker_loss_and_total(tts: Any, examples: list[TrainingExample]) -> None:
    talker = tts.model.talker
    with torch.no_grad():
        batch, hidden = frames_and_hidden(tts, examples)
        logits = talker.codec_head(hidden)
        terms = [
            F.cross_entropy(logits[b, p], batch.labels[b, p])
            for b in range(batch.labels.shape[0])
            for p in range(batch.labels.shape[1])
            if batch.labels[b, p] >= 0
        ]
        assert len(terms) == sum(e.num_frames + 1 for e in examples[:2])  # every frame's code 0, then eos
        torch.testing.assert_close(talker_loss(talker, hidden, batch.labels), torch.stack(terms).mean())
        losses = compute_losses(talker, batch, predictor_weight=0.3)
    torch.testing.assert_close(losses.total, losses.talker + 0.3 * losses.predictor)
    torch.testing.assert_close(losses.talker, torch.stack(terms).mean())
