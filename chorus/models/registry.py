"""Config → backend. The bundled Piper voice is the default; later backends register here."""

from __future__ import annotations

from chorus.config import Settings
from chorus.errors import ConfigError
from chorus.models.base import Backend

PIPER_NAMES = frozenset({"piper", "piper-joe", "joe"})


def build_backend(settings: Settings) -> Backend:
    model = settings.model
    name = model.name.lower()
    if name in PIPER_NAMES or name.endswith(".onnx"):
        from chorus.models.piper import PiperBackend

        if model.device == "cuda":
            raise ConfigError("model.device: the Piper backend runs on the CPU; use device: cpu")
        path = model.local_path
        if path is not None and not path.exists():
            raise ConfigError(f"model.local_path: {path} does not exist")
        try:
            return PiperBackend(
                path,
                num_workers=model.num_workers,
                first_emit_frames=settings.worker.first_emit_frames,
                emit_every_frames=settings.worker.emit_every_frames,
            )
        except ValueError as e:
            raise ConfigError(f"model.local_path: {e}") from e
    raise ConfigError(f"model.name: unknown model {model.name!r} (available: piper)")
