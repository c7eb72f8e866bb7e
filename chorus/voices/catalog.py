"""The built-in voices a backend offers, with OpenAI's voice names as aliases (cloned voices: voices/service.py)."""

from __future__ import annotations

from chorus.errors import InvalidRequestError
from chorus.models.base import VoiceInfo

# OpenAI's voice names, so that clients written for OpenAI work unchanged: they speak with the default voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


class VoiceCatalog:
    def __init__(self, voices: list[VoiceInfo], *, openai_aliases: bool = True) -> None:
        if not voices:
            raise ValueError("a backend must offer at least one voice")
        self._voices = {v.voice_id.lower(): v for v in voices}
        self.default = voices[0]
        self._aliases = OPENAI_VOICES if openai_aliases else frozenset()

    def list(self) -> list[VoiceInfo]:
        return list(self._voices.values())

    def resolve(self, name: str | None, *, param: str = "voice") -> VoiceInfo:
        """Voice id or name (case-insensitive), an OpenAI alias, or None for the default voice."""
        if name is None or name == "":
            return self.default
        key = name.strip().lower()
        if key in self._voices:
            return self._voices[key]
        if key in self._aliases:
            return self.default
        known = ", ".join(sorted(self._voices))
        raise InvalidRequestError(f"unknown voice {name!r}; available: {known}", param=param)
