"""The envelope of a backend's per-voice model as stored: a format line, then the backend's payload.

The format names the method, its version and the base model it was fitted against (e.g. a conversion fitted
to Piper voice A is wrong for voice B). A server whose backend wants another format rebuilds the model from the
voice's reference audio instead of loading bytes made for something else.
"""

from __future__ import annotations

MAGIC = b"chorus-voice-model\n"
_MAX_FORMAT_LEN = 512
# In the format of a fine-tuned voice's model ("qwen3-lora-1:…"): its adapter cannot be rebuilt from the reference.
FINE_TUNED_MARK = "-lora-"


class VoiceModelFormatError(ValueError):
    """The bytes are not a voice model of the wanted format (another backend, another version, or damaged)."""


def pack(voice_format: str, payload: bytes) -> bytes:
    line = voice_format.encode()
    if b"\n" in line or not line or len(line) > _MAX_FORMAT_LEN:
        raise ValueError(f"bad voice model format {voice_format!r}")
    return MAGIC + line + b"\n" + payload


def format_of(data: bytes) -> str | None:
    """The format line of a packed voice model (None for bytes that are not one)."""
    if not data.startswith(MAGIC):
        return None
    line, sep, _ = data[len(MAGIC) : len(MAGIC) + _MAX_FORMAT_LEN + 1].partition(b"\n")
    return line.decode(errors="replace") if sep else None


def unpack(data: bytes, voice_format: str) -> bytes:
    """The payload of ``data``; VoiceModelFormatError unless it was packed with exactly ``voice_format``."""
    if not data.startswith(MAGIC):
        raise VoiceModelFormatError("not a chorus voice model")
    line, sep, payload = data[len(MAGIC) :].partition(b"\n")
    if not sep:
        raise VoiceModelFormatError("truncated voice model")
    found = line.decode(errors="replace")
    if found != voice_format:
        raise VoiceModelFormatError(f"voice model is {found!r}; this backend needs {voice_format!r}")
    return payload
