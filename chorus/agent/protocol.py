"""The voice-agent WebSocket protocol (``WS /v1/audio/speech/stream``): client messages, checked.

Client → server, JSON text frames:
- ``session.update``: the session's voice and audio settings (any subset; applies to the next utterance);
- ``input_text.append`` ``{"text"}``: any fragment of text (a token, a word, half a word);
- ``input_text.flush``: speak whatever is buffered now and end the utterance;
- ``response.cancel``: barge-in: stop the audio at once and drop the buffered text;
- ``session.close``: speak what is buffered, then close.

Server → client: ``session.created``, ``session.updated``, per utterance ``response.audio.start``, the audio
(binary frames, or ``response.audio.delta`` JSON with base64), ``response.timestamps``, ``response.audio.done``;
``error`` events (the HTTP error codes); a close frame with a reason.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chorus.errors import InvalidRequestError
from chorus.server.schemas import SpeechKnobs

StreamFormat = Literal["pcm", "mp3", "opus"]
AudioEncoding = Literal["binary", "base64"]
MAX_MESSAGE_CHARS = 65_536


class SessionSettings(SpeechKnobs):
    """What ``session.update`` sets; the same knobs as ``POST /v1/audio/speech`` (priority, noise, seed, …)."""

    model_config = ConfigDict(extra="forbid")
    voice: str | None = Field(default=None, max_length=200)
    response_format: StreamFormat = "pcm"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    sample_rate: int = Field(default=24_000, ge=8000, le=48_000, description="the audio's rate (pcm: s16le mono)")
    timestamps: bool = False
    audio_encoding: AudioEncoding = "binary"


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["session.update"]
    session: dict[str, object] | None = None  # {"session": {...}} (OpenAI style) or the fields at the top level


class TextAppend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text.append"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class Bare(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text.flush", "response.cancel", "session.close"]


ClientMessage = SessionUpdate | TextAppend | Bare
SETTING_FIELDS = frozenset(SessionSettings.model_fields)


def parse_message(raw: str) -> tuple[ClientMessage, dict[str, object]]:
    """A client frame → its message and, for ``session.update``, the settings it names; InvalidRequestError
    (with ``param``) for anything else."""
    if len(raw) > MAX_MESSAGE_CHARS + 1024:
        raise InvalidRequestError(f"a message may be at most {MAX_MESSAGE_CHARS} characters", param="message")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"messages are JSON objects: {e.msg}", param="message") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("messages are JSON objects", param="message")
    kind = data.get("type")
    try:
        if kind == "session.update":
            nested = data.get("session")
            fields = dict(nested) if isinstance(nested, dict) else {k: v for k, v in data.items() if k != "type"}
            unknown = sorted(set(fields) - SETTING_FIELDS)
            if unknown:
                raise InvalidRequestError(f"unknown session setting {unknown[0]!r}", param=f"session.{unknown[0]}")
            return SessionUpdate(type="session.update"), fields
        if kind == "input_text.append":
            return TextAppend.model_validate(data), {}
        if kind in ("input_text.flush", "response.cancel", "session.close"):
            return Bare.model_validate(data), {}
    except ValidationError as e:
        raise _invalid(e) from None
    raise InvalidRequestError(f"unknown message type {kind!r}", param="type")


def apply_update(current: SessionSettings, fields: dict[str, object]) -> SessionSettings:
    """The settings after an update, all checked at once (nothing changes when one field is bad)."""
    try:
        return SessionSettings.model_validate({**current.model_dump(), **fields})
    except ValidationError as e:
        raise _invalid(e, prefix="session.") from None


def _invalid(e: ValidationError, prefix: str = "") -> InvalidRequestError:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return InvalidRequestError(f"{where}: {first['msg']}", param=f"{prefix}{where}" if where else None)
