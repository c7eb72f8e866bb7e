"""The code predictor (codebooks 1..15 of a frame) for every slot at once, without ``generate``'s machinery.

The library runs a fresh ``generate`` per frame: a DynamicCache that concatenates, a causal mask built per
token, rotary embeddings recomputed per token, a logits-processor list. Here the same layers run over a
preallocated cache ``[max_slots, kv_heads, num_code_groups, head_dim]`` per layer (a frame's sequence is at most
``num_code_groups`` long and is thrown away after the frame), and the rotary table for those positions is
computed once. The attention masks match the library's under SDPA (the attention the backend loads, as for the
talker): SDPA's own causal mask for the two prompt positions, none for the one-token steps, so the arithmetic is
the library's op for op (the greedy tests compare codes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class PredictorCache:
    """Keys/values of the frame being predicted: written at ``position``, read as ``[:n, :, :position + S]``."""

    def __init__(
        self, *, num_layers: int, max_slots: int, kv_heads: int, max_len: int, head_dim: int, dtype: Any, device: Any
    ) -> None:
        shape = (max_slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.rows = 0
        self.position = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, cache_kwargs: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New keys/values [n, kv_heads, S, head_dim] in; all so far [n, kv_heads, position + S, head_dim] out."""
        end = self.position + key_states.shape[2]
        keys, values = self.keys[layer_idx][: self.rows], self.values[layer_idx][: self.rows]
        keys[:, :, self.position : end] = key_states
        values[:, :, self.position : end] = value_states
        return keys[:, :, :end], values[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.position

    @property
    def is_compileable(self) -> bool:
        return False


class CodePredictor:
    """Codebooks 1..15 of every slot's current frame, batched: the library's inner ``generate``, op for op."""

    def __init__(self, predictor: Any, *, max_slots: int, dtype: torch.dtype, device: torch.device) -> None:
        config = predictor.model.config
        self.predictor = predictor
        self.num_groups = int(config.num_code_groups)
        head_dim = int(getattr(config, "head_dim", config.hidden_size // config.num_attention_heads))
        self.cache = PredictorCache(
            num_layers=len(predictor.model.layers),
            max_slots=max_slots,
            kv_heads=int(config.num_key_value_heads),
            max_len=self.num_groups,
            head_dim=head_dim,
            dtype=dtype,
            device=device,
        )
        with torch.inference_mode():
            probe = torch.zeros(1, dtype=dtype, device=device)
            positions = torch.arange(self.num_groups, device=device)[None]
            self._cos, self._sin = predictor.model.rotary_emb(probe, positions)  # [1, num_groups, head_dim] each

    def __call__(
        self, inputs: torch.Tensor, choose: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [n, 2, H]: the talker's last hidden state and the embedding of code 0. ``choose(j, logits)``
        turns codebook j+1's float32 logits [n, vocab] into codes [n]. Returns codebooks 1..15 [n, 15] and their
        embeddings [n, 15, H] (the talker's next input sums them; each is looked up once)."""
        p = self.predictor
        tables = p.get_input_embeddings()
        self.cache.rows = inputs.shape[0]
        self.cache.position = 0
        h = p.small_to_mtp_projection(inputs)
        codes, embeds = [], []
        for j in range(self.num_groups - 1):
            hidden = self._forward(h)
            code = choose(j, p.lm_head[j](hidden[:, -1]).float())
            codes.append(code)
            embeds.append(tables[j](code))
            if j < self.num_groups - 2:
                h = p.small_to_mtp_projection(embeds[-1][:, None, :])
        return torch.stack(codes, dim=1), torch.stack(embeds, dim=1)

    def _forward(self, h: torch.Tensor) -> torch.Tensor:
        """The predictor's decoder layers and final norm over h [n, S, H] at the cache's position."""
        start, end = self.cache.position, self.cache.position + h.shape[1]
        position_embeddings = (self._cos[:, start:end], self._sin[:, start:end])
        model = self.predictor.model
        for layer in model.layers:
            out = layer(h, attention_mask=None, past_key_values=self.cache, position_embeddings=position_embeddings)
            h = out[0] if isinstance(out, tuple) else out
        self.cache.position = end
        return model.norm(h)
