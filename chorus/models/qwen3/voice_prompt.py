"""A registered Base voice's cloning prompt as stored bytes: the library's VoiceClonePromptItem (speaker
embedding, reference codes, mode flags, transcript) in safetensors, never pickle; and the checkpoint identity
that such bytes are valid for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from chorus.models.cloning.voice_model import VoiceModelFormatError


def checkpoint_digest(path: Path) -> str:
    """Config + weight file sizes: changes with the checkpoint, without hashing gigabytes at start-up."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "speech_tokenizer/model.safetensors"):
        f = path / name
        if f.is_file():
            h.update(
                name.encode() + f.read_bytes() if name.endswith(".json") else f"{name}:{f.stat().st_size}".encode()
            )
    return h.hexdigest()[:16]


def encode_prompt(item: Any) -> bytes:
    from safetensors.torch import save

    tensors = {"ref_spk_embedding": item.ref_spk_embedding.detach().float().cpu().contiguous()}
    if item.ref_code is not None:
        tensors["ref_code"] = item.ref_code.detach().cpu().contiguous()
    meta = {"x_vector_only_mode": item.x_vector_only_mode, "icl_mode": item.icl_mode, "ref_text": item.ref_text}
    return bytes(save(tensors, metadata={"item": json.dumps(meta)}))


def decode_prompt(payload: bytes, device: torch.device, dtype: torch.dtype) -> Any:
    """The prompt item on ``device`` (speaker embedding in ``dtype``); VoiceModelFormatError for bad bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from chorus.models.qwen3.compat import import_qwen_tts

    try:
        tensors = load(payload)
        meta = json.loads(_safetensors_metadata(payload)["item"])
    except (SafetensorError, ValueError, KeyError) as e:
        raise VoiceModelFormatError(f"unreadable Qwen3 voice prompt: {e}") from e
    ref_code = tensors.get("ref_code")
    return import_qwen_tts().VoiceClonePromptItem(
        ref_code=None if ref_code is None else ref_code.to(device),
        ref_spk_embedding=tensors["ref_spk_embedding"].to(device, dtype),
        x_vector_only_mode=bool(meta["x_vector_only_mode"]),
        icl_mode=bool(meta["icl_mode"]),
        ref_text=meta.get("ref_text"),
    )


def _safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors buffer (safetensors.torch.load drops it)."""
    header_len = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + header_len])
    meta: dict[str, str] = header.get("__metadata__") or {}
    return meta
