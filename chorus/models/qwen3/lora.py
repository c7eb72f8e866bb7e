"""Many LoRA adapters inside one batched step: a per-row gathered delta on the talker and code predictor.

Every adaptable ``nn.Linear`` (q/k/v/o and gate/up/down of both decoders) is wrapped once by
:class:`GatheredLoRALinear`, which keeps the A and B matrices of every adapter on the device stacked as
``[capacity + 1, rank, in]`` and ``[capacity + 1, out, rank]``; entry 0 is all zeros (= no adapter). A batch binds
one index per row (:meth:`AdapterPool.bind`); each layer then adds ``B[i] (A[i] x)`` per row with two batched
matmuls (index_select + bmm): one forward for rows with different adapters and rows with none. B is stored scaled
by alpha / rank, so the sum is exactly PEFT's LoRA output without dropout.

The pool is an LRU cache of ``capacity`` adapters: an adapter a running slot uses is pinned; a newcomer's cold
adapter takes the least recently used unpinned entry. Installing copies the (already parsed, host-side)
matrices into that entry, on the engine thread between steps (reading and parsing happen earlier, off it).
The binding is thread-local: library code run by other threads (prompt capture) never sees a batch's indices.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from chorus.models.qwen3.adapter import LoraAdapter

# The Linear layers an adapter may target, by their attribute names inside each decoder layer.
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
DECODERS = ("talker.model.layers", "talker.code_predictor.model.layers")


class AdapterCapacityError(RuntimeError):
    """Every adapter entry on the device is in use by a running stream (raise ``model.max_adapters``)."""


class GatheredLoRALinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, binding: threading.local) -> None:
        super().__init__()
        self.base = base
        self._binding = binding
        self.a: torch.Tensor | None = None  # [capacity + 1, rank, in]
        self.b: torch.Tensor | None = None  # [capacity + 1, out, rank], scaled by alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        index: torch.Tensor | None = getattr(self._binding, "index", None)
        if index is None or self.a is None or self.b is None:
            return y
        a = self.a.index_select(0, index)  # [n, r, in]
        b = self.b.index_select(0, index)  # [n, out, r]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # [n, S, in]
        delta = torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2))
        return y + delta.reshape(y.shape)

    def allocate(self, capacity: int, rank: int) -> None:
        """(Re)size the stacks to ``rank``, keeping what is installed (a larger rank pads with zeros)."""
        w = self.base.weight
        a = torch.zeros(capacity + 1, rank, w.shape[1], dtype=w.dtype, device=w.device)
        b = torch.zeros(capacity + 1, w.shape[0], rank, dtype=w.dtype, device=w.device)
        if self.a is not None and self.b is not None:
            old = self.a.shape[1]
            a[:, :old] = self.a
            b[:, :, :old] = self.b
        self.a, self.b = a, b

    def install(self, entry: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        assert self.a is not None and self.b is not None
        self.a[entry].zero_()
        self.b[entry].zero_()
        if a is not None and b is not None:
            r = a.shape[0]
            self.a[entry, :r].copy_(a)
            self.b[entry, :, :r].copy_(b)


@dataclass
class _Entry:
    key: str
    index: int
    pins: int = 0
    doomed: bool = False  # evict when the last running stream using it ends


@dataclass
class AdapterPool:
    """The device-resident adapters of one model (see the module docstring)."""

    layers: dict[str, GatheredLoRALinear]
    capacity: int
    rank: int = 0
    binding: threading.local = field(default_factory=threading.local)
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)  # LRU first
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loads: int = 0  # adapters installed so far (the rest of acquisitions were hits)

    @classmethod
    def wrap(cls, model: torch.nn.Module, capacity: int) -> AdapterPool:
        """Wrap every adaptable Linear of ``model`` (a Qwen3TTSForConditionalGeneration) in place."""
        binding = threading.local()
        layers: dict[str, GatheredLoRALinear] = {}
        for decoder in DECODERS:
            decoder_layers: Any = model.get_submodule(decoder)
            for i, layer in enumerate(decoder_layers):
                for part, names in (("self_attn", ATTENTION), ("mlp", MLP)):
                    parent = getattr(layer, part)
                    for name in names:
                        base = getattr(parent, name)
                        if isinstance(base, GatheredLoRALinear):
                            raise RuntimeError("this model's layers are already wrapped for LoRA")
                        wrapped = GatheredLoRALinear(base, binding)
                        setattr(parent, name, wrapped)
                        layers[f"{decoder}.{i}.{part}.{name}"] = wrapped
        return cls(layers=layers, capacity=capacity, binding=binding)

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def acquire(self, key: str, adapter: LoraAdapter) -> int:
        """The entry holding ``adapter`` (installed now if cold), pinned until :meth:`release`. Engine thread."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry.doomed:
                entry.pins += 1
                self._entries.move_to_end(key)
                return entry.index
            index = self._free_index()
        unknown = set(adapter.weights) - set(self.layers)
        if unknown:
            raise ValueError(f"adapter targets layers this model does not have: {sorted(unknown)[:3]}")
        if adapter.rank > self.rank:
            for layer in self.layers.values():
                layer.allocate(self.capacity, adapter.rank)
            self.rank = adapter.rank
        for path, layer in self.layers.items():
            pair = adapter.weights.get(path)
            if pair is None:
                layer.install(index, None, None)
                continue
            a, b = pair
            w = layer.base.weight
            layer.install(index, a.to(w.device, w.dtype), (b * adapter.scale).to(w.device, w.dtype))
        with self._lock:
            self._entries[key] = _Entry(key, index, pins=1)
            self.loads += 1
        return index

    def release(self, index: int) -> None:
        with self._lock:
            for key, entry in self._entries.items():
                if entry.index == index:
                    entry.pins -= 1
                    if entry.pins <= 0 and entry.doomed:
                        del self._entries[key]
                    return

    def evict(self, key: str) -> None:
        """Forget ``key`` (its voice was deleted): at once, or when the last stream using it ends."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            del self._entries[key]
            if entry.pins > 0:  # kept (under a name no voice has) until its last stream ends
                entry.doomed = True
                self._entries[f"{key}#evicted-{entry.index}"] = entry

    def bind_rows(self, entries: list[int], device: torch.device) -> contextlib.AbstractContextManager[None]:
        """:meth:`bind` for a batch whose rows use ``entries`` (no binding at all when no row has an adapter)."""
        if not any(entries):
            return self.bind(None)
        return self.bind(torch.tensor(entries, dtype=torch.long, device=device))

    @contextlib.contextmanager
    def bind(self, index: torch.Tensor | None) -> Iterator[None]:
        """Rows of this thread's forwards use adapter entries ``index`` [n] (None: no row has one)."""
        self.binding.index = index
        try:
            yield
        finally:
            self.binding.index = None

    def _free_index(self) -> int:
        used = {e.index for e in self._entries.values()}
        for i in range(1, self.capacity + 1):
            if i not in used:
                return i
        for key, entry in self._entries.items():  # least recently used first
            if entry.pins == 0:
                del self._entries[key]
                return entry.index
        raise AdapterCapacityError(
            f"all {self.capacity} adapter entries are in use by running streams (model.max_adapters)"
        )
