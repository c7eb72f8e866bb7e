"""Request bodies, validated at the edge; named by role (``*Request`` in)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chorus.audio.encode import ResponseFormat


class VoiceRef(BaseModel):
    """OpenAI's object form of ``voice``: ``{"id": "..."}``."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)


class SpeechKnobs(BaseModel):
    """chorus extensions shared by the speech routes (OpenAI clients send them via ``extra_body``)."""

    priority: int = Field(default=0, ge=-100, le=100, description="higher is admitted first")
    noise_scale: float | None = Field(default=None, ge=0, le=2, description="Piper generator noise; 0 = deterministic")
    noise_w_scale: float | None = Field(default=None, ge=0, le=2, description="Piper duration noise; 0 = deterministic")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="the same seed gives the same audio (Piper: its noise; Qwen3: sampling)",
    )
    # Autoregressive models (Qwen3-TTS): per-request sampling; 0 temperature = greedy.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=1, le=4096)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, ge=1, le=2)
    language: str | None = Field(default=None, max_length=64)
    timeout: float | None = Field(
        default=None, gt=0, le=86_400, description="seconds this request may take; capped by server.request_timeout_s"
    )


class SpeechRequest(SpeechKnobs):
    """``POST /v1/audio/speech`` (OpenAI)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"model": "tts-1", "input": "Hello there.", "voice": "alloy"}]}
    )
    model: str = Field(min_length=1, max_length=200)
    # Upper bound enforced against settings.server.max_input_chars in the route.
    input: str = Field(min_length=1)
    voice: str | VoiceRef
    instructions: str | None = Field(default=None, max_length=4096)
    response_format: ResponseFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    timestamps: bool = Field(
        default=False,
        description="with stream_format sse: each speech.audio.delta carries the words whose audio starts in it "
        "({word, start_s, end_s}, seconds from the start of this audio)",
    )


class GenerateRequest(SpeechKnobs):
    """``POST /v1/tts/generate`` (vTTS-style SSE)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "Hello there."}]})
    text: str = Field(min_length=1)
    voice: str | None = Field(default=None, max_length=200)
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    response_format: Literal["pcm", "wav", "mp3", "opus", "aac", "flac"] = "pcm"
    timestamps: bool = Field(
        default=False,
        description="each audio event carries the words whose audio starts in it ({word, start_s, end_s})",
    )
