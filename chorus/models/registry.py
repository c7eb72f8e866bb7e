"""Config → backend. The bundled Piper voice is the default; a Qwen3-TTS folder selects that backend."""

from __future__ import annotations

import json
from pathlib import Path

from chorus.config import Settings
from chorus.errors import ConfigError
from chorus.models.base import Backend

PIPER_NAMES = frozenset({"piper", "piper-joe", "joe"})


def is_qwen3_folder(path: Path | None) -> bool:
    if path is None or not (path / "config.json").is_file():
        return False
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", "")).startswith("qwen3_tts")
    except (OSError, ValueError):
        return False


def build_backend(settings: Settings) -> Backend:
    model = settings.model
    name = model.name.lower()
    path = model.local_path
    if path is not None and not path.exists():
        raise ConfigError(f"model.local_path: {path} does not exist")
    if is_qwen3_folder(path) or (name.startswith(("qwen3", "qwen/qwen3")) and path is not None):
        return _qwen3(settings)
    if name.startswith(("qwen3", "qwen/qwen3")):
        raise ConfigError("model.local_path: Qwen3-TTS needs a local folder with its weights (no hub downloads)")
    if name in PIPER_NAMES or name.endswith(".onnx") or (path is not None and path.suffix == ".onnx"):
        return _piper(settings)
    raise ConfigError(f"model.name: unknown model {model.name!r} (available: piper, qwen3 with model.local_path)")


def _piper(settings: Settings) -> Backend:
    from chorus.models.piper import PiperBackend

    model = settings.model
    if model.device == "cuda":
        raise ConfigError("model.device: the Piper backend runs on the CPU; use device: cpu")
    try:
        return PiperBackend(
            model.local_path,
            num_workers=model.num_workers,
            first_emit_frames=settings.worker.first_emit_frames,
            emit_every_frames=settings.worker.emit_every_frames,
            max_emit_frames=settings.worker.max_emit_frames,
            quantization=model.quantization,
        )
    except ValueError as e:
        raise ConfigError(f"model.local_path: {e}") from e


def _qwen3(settings: Settings) -> Backend:
    from chorus.audio.decode import decode_audio

    try:
        import torch

        from chorus.models.qwen3.backend import SAMPLE_RATE, CloneVoice, Qwen3Backend
    except ImportError as e:
        raise ConfigError(f"model.local_path: the Qwen3-TTS backend needs the qwen extra ({e})") from e
    model = settings.model
    device = model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device: cuda requested but no CUDA device is available")
    dtype = None if model.dtype == "auto" else getattr(torch, model.dtype)
    voices = []
    for i, voice in enumerate(model.voices):
        try:
            audio, _ = decode_audio(voice.ref_audio.read_bytes(), sample_rate=SAMPLE_RATE)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.voices.{i}.ref_audio: {e}") from e
        voices.append(CloneVoice(voice.id, audio, voice.ref_text, voice.language))
    if model.local_path is None:  # build_backend only routes here with a path
        raise ConfigError("model.local_path: required for Qwen3-TTS")
    try:
        return Qwen3Backend(
            model.local_path,
            device=device,
            dtype=dtype,
            max_slots=settings.worker.max_slots,
            max_len=model.max_seq_len,
            first_emit_frames=settings.worker.first_emit_frames,
            emit_every_frames=settings.worker.emit_every_frames,
            max_emit_frames=settings.worker.max_emit_frames,
            clone_voices=voices,
            max_adapters=model.max_adapters,
        )
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e
