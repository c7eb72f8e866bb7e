"""chorus: a self-hosted, continuous-batching, voice-cloning text-to-speech server."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["TTS", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import chorus` stays light (the CLI and config do not load onnx and friends).
    if name == "TTS":
        from chorus.api import TTS

        return TTS
    raise AttributeError(name)
