"""The Qwen3-TTS fine-tuning loss: codebook 0 from the talker, codebooks 1..15 from the code predictor.

``total = talker + predictor_weight × predictor`` (0.3 in the public recipe). The predictor term is *aligned*
with inference: for a frame with codes ``c[0..G-1]`` predicted from the talker hidden state ``h``, the predictor
reads ``[h, emb0(c0), emb_1(c1), …, emb_{G-2}(c_{G-2})]`` (through ``small_to_mtp_projection``) and head ``j`` at
position ``j + 1`` predicts ``c[j + 1]``, exactly what ``chorus.models.qwen3.predictor.CodePredictor`` computes
one code at a time when serving. qwen-tts 0.1.1's ``forward_sub_talker_finetune`` computes the same logits but
hands them to a causal-LM loss that shifts the labels again, so head ``j`` is trained on ``c[j + 2]`` (and head
14 on nothing): its loss stays flat, and a model trained with it predicts the wrong codebook when serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from chorus.finetune.qwen3_samples import IGNORE, TrainingBatch

PREDICTOR_WEIGHT = 0.3


@dataclass(frozen=True, slots=True)
class Losses:
    talker: torch.Tensor  # scalar: mean cross-entropy of code 0 (and codec_eos)
    predictor: torch.Tensor  # scalar: mean cross-entropy of codebooks 1..G-1 over frames and heads
    total: torch.Tensor  # talker + weight × predictor


def input_embeddings(talker: Any, batch: TrainingBatch) -> torch.Tensor:
    """The talker's inputs [B, S, H]: the text and codec channels summed, the speaker embedding in its slot and
    codebooks 1..G-1 added at frame positions (what the library's ``generate`` feeds, row by row)."""
    text = talker.text_projection(talker.model.text_embedding(batch.text_ids))
    codec = talker.model.codec_embedding(batch.codec_ids)
    tables = talker.code_predictor.get_input_embeddings()
    frames = sum(tables[g - 1](batch.frame_codes[..., g]) for g in range(1, batch.frame_codes.shape[-1]))
    embeds: torch.Tensor = (
        text * batch.text_mask[..., None]
        + codec * batch.codec_mask[..., None]
        + frames * batch.frame_mask[..., None]
        + batch.speakers[:, None, :].to(text.dtype) * batch.speaker_mask[..., None]
    )
    return embeds


def talker_hidden(talker: Any, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The talker's last hidden states [B, S, H] (after the final norm, as ``past_hidden`` is when serving)."""
    out = talker.model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
    hidden: torch.Tensor = out.last_hidden_state
    return hidden


def talker_loss(talker: Any, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``codec_head`` at the labelled positions; ``labels[b, p]`` is the target of the hidden
    state at p (already shifted: the causal-LM shift is built into the layout)."""
    keep = labels != IGNORE
    logits = talker.codec_head(hidden[keep]).float()
    return F.cross_entropy(logits, labels[keep])


def predictor_logits(talker: Any, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits [n, G-1, V] of codebooks 1..G-1 for n frames: ``hidden`` [n, H] is the talker's
    hidden state that predicted each frame's code 0, ``codes`` [n, G] the frame's codes."""
    predictor = talker.code_predictor
    tables = predictor.get_input_embeddings()
    groups = codes.shape[1]
    inputs = torch.cat(
        [hidden[:, None, :], talker.model.codec_embedding(codes[:, :1])]
        + [tables[g - 1](codes[:, g : g + 1]) for g in range(1, groups - 1)],
        dim=1,
    )  # [n, G, H]: position j + 1 holds codebook j
    out = predictor.model(inputs_embeds=predictor.small_to_mtp_projection(inputs), use_cache=False)
    states = out.last_hidden_state  # [n, G, h]
    logits: torch.Tensor = torch.stack([predictor.lm_head[j](states[:, j + 1]) for j in range(groups - 1)], dim=1)
    return logits


def predictor_loss(talker: Any, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of head j predicting ``codes[:, j + 1]`` over all frames and heads (aligned)."""
    logits = predictor_logits(talker, hidden, codes).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[:, 1:].reshape(-1))


def compute_losses(talker: Any, batch: TrainingBatch, *, predictor_weight: float = PREDICTOR_WEIGHT) -> Losses:
    hidden = talker_hidden(talker, input_embeddings(talker, batch), batch.attention_mask)
    main = talker_loss(talker, hidden, batch.labels)
    frames = batch.target_mask
    sub = predictor_loss(talker, hidden[frames], batch.target_codes[frames])
    return Losses(talker=main, predictor=sub, total=main + predictor_weight * sub)
