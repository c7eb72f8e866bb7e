"""chorus's LoRA adapter file: what a fine-tune writes and what the Qwen3 backend serves.

One safetensors blob. For every adapted ``torch.nn.Linear`` of the model (its dotted path inside
``Qwen3TTSModel.model``, e.g. ``talker.model.layers.0.self_attn.q_proj`` or
``talker.code_predictor.model.layers.1.mlp.down_proj``) two float32 tensors::

    "<path>.lora_A"   [rank, in_features]
    "<path>.lora_B"   [out_features, rank]

and string metadata ``format`` (``chorus-lora-1``), ``rank``, ``alpha`` and ``base`` (the digest of the checkpoint it
was trained on: an adapter is refused by any other). The layer's output becomes ``W x + (alpha / rank) B A x``:
PEFT's LoRA without dropout, which is what serving applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch

FORMAT = "chorus-lora-1"
SUFFIX_A = ".lora_A"
SUFFIX_B = ".lora_B"


class AdapterFormatError(ValueError):
    """Bytes that are not a chorus LoRA adapter, or one for another checkpoint."""


@dataclass(frozen=True)
class LoraAdapter:
    rank: int
    alpha: float
    base: str
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module path → (A [r, in], B [out, r]), float32, CPU

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def num_parameters(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.weights.values())

    def delta(self, module: str) -> torch.Tensor:
        """The dense weight change of one layer, [out, in]: what merging this adapter adds to its weight."""
        a, b = self.weights[module]
        return (b.double() @ a.double() * self.scale).float()


def save_adapter(
    weights: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, rank: int, alpha: float, base: str
) -> bytes:
    from safetensors.torch import save

    if rank < 1:
        raise ValueError("rank must be at least 1")
    tensors: dict[str, torch.Tensor] = {}
    for path, (a, b) in sorted(weights.items()):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(f"{path}: A {tuple(a.shape)} and B {tuple(b.shape)} do not have rank {rank}")
        tensors[path + SUFFIX_A] = a.detach().to("cpu", torch.float32).contiguous()
        tensors[path + SUFFIX_B] = b.detach().to("cpu", torch.float32).contiguous()
    metadata = {"format": FORMAT, "rank": str(rank), "alpha": repr(float(alpha)), "base": base}
    return canonical_safetensors(bytes(save(tensors, metadata=metadata)))


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` with its header's metadata keys sorted. safetensors writes the metadata from a Rust HashMap, in
    an order that changes from process to process, so the same adapter would not be the same bytes twice; the
    rewritten header has the same length (the same compact JSON, reordered), so the offsets stay valid."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:
        raise ValueError("safetensors header grew when made canonical")
    return data[:8] + text.ljust(size, b" ") + data[8 + size :]


def load_adapter(data: bytes, *, base: str | None = None) -> LoraAdapter:
    """Parse an adapter blob; with ``base``, refuse one trained on another checkpoint."""
    import struct

    from safetensors.torch import load

    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types, struct and json theirs
        raise AdapterFormatError(f"not a safetensors adapter: {e}") from e
    if metadata.get("format") != FORMAT:
        raise AdapterFormatError(f"adapter format {metadata.get('format')!r}, expected {FORMAT!r}")
    if base is not None and metadata.get("base") != base:
        raise AdapterFormatError(f"adapter trained on checkpoint {metadata.get('base')!r}, this one is {base!r}")
    rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, a in tensors.items():
        if name.endswith(SUFFIX_A):
            path = name[: -len(SUFFIX_A)]
            b = tensors.get(path + SUFFIX_B)
            if b is None or a.shape[0] != rank or b.shape[1] != rank:
                raise AdapterFormatError(f"{path}: missing or mis-shaped LoRA pair")
            weights[path] = (a.float(), b.float())
    if not weights or len(weights) * 2 != len(tensors):
        raise AdapterFormatError("adapter has no LoRA pairs, or unpaired tensors")
    return LoraAdapter(rank=rank, alpha=alpha, base=metadata.get("base", ""), weights=weights)
