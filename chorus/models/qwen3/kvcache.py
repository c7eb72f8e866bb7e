"""A preallocated per-slot KV cache for the talker: written in place, never re-padded.

Layout per layer: keys and values ``[max_slots, kv_heads, max_len, head_dim]``. A request owns one row for
its life; its length is its own position count. Rows of running requests are kept packed at the front
(``compact`` moves the last row into a freed one), so a decode step over all running slots reads a
plain view ``[:n, :, :max_len_in_batch]`` and copies nothing; only a step over a scattered subset of rows
gathers. This is what vTTS does not do: it re-pads every slot's whole cache each step.

The object is handed to the library's attention layers as ``past_key_values``: they call ``update`` with the
new keys/values of the current tokens and attend over what it returns, under the mask the backend builds.
"""

from __future__ import annotations

from typing import Any

import torch


class SlotKVCache:
    def __init__(
        self,
        *,
        num_layers: int,
        max_slots: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (max_slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_slots = max_slots
        self.max_len = max_len
        # Set by the backend before each forward: rows taking part, the positions their new tokens go to,
        # and how many positions each returned row exposes to attention.
        self._rows: torch.Tensor | None = None
        self._packed = 0  # > 0: rows are exactly 0..packed-1, read as a view
        self._positions: torch.Tensor | None = None
        self._read_len = 0

    def bind(self, rows: torch.Tensor, is_packed: bool, positions: torch.Tensor, read_len: int) -> None:
        """rows: [B] row of each batch entry (is_packed: exactly 0..B-1); positions: [B, S] cache position of each
        new token, all < read_len (the caller knows both from ints: no device sync here)."""
        if read_len > self.max_len:
            raise ValueError(f"KV cache is full ({self.max_len} positions per slot)")
        self._rows = rows
        self._packed = rows.numel() if is_packed else 0
        self._positions = positions
        self._read_len = read_len

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, cache_kwargs: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new [B, kv_heads, S, head_dim] keys/values in place; return [B, kv_heads, read_len, head_dim]."""
        if self._rows is None or self._positions is None:
            raise RuntimeError("SlotKVCache.update called before bind()")
        rows = self._rows[:, None]  # [B, 1] broadcast against positions [B, S]
        self.keys[layer_idx][rows, :, self._positions] = key_states.transpose(1, 2)
        self.values[layer_idx][rows, :, self._positions] = value_states.transpose(1, 2)
        if self._packed:
            return (
                self.keys[layer_idx][: self._packed, :, : self._read_len],
                self.values[layer_idx][: self._packed, :, : self._read_len],
            )
        return (
            self.keys[layer_idx].index_select(0, self._rows)[:, :, : self._read_len],
            self.values[layer_idx].index_select(0, self._rows)[:, :, : self._read_len],
        )

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Copy one slot's cache (its first ``length`` positions) to another row (packing after a leave)."""
        for k, v in zip(self.keys, self.values, strict=True):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    # The library's layers may ask these of a cache object.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._read_len

    @property
    def is_compileable(self) -> bool:
        return False
