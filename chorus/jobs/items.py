"""What a job's item may ask for (validated when the job is submitted) and the speech order it becomes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chorus.audio.encode import ResponseFormat
from chorus.speech import SpeechOrder, synthesis_params


class JobItem(BaseModel):
    """One line of a job: the fields of ``POST /v1/audio/speech`` that shape the audio."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(min_length=1, description="the text; at most server.max_input_chars characters")
    voice: str = Field(min_length=1, max_length=200)
    response_format: ResponseFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)
    language: str | None = Field(default=None, max_length=64)
    noise_scale: float | None = Field(default=None, ge=0, le=2)
    noise_w_scale: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=1, le=4096)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, ge=1, le=2)


def order_of(spec: dict[str, Any], *, tenant_id: str, priority: int) -> SpeechOrder:
    """The speech order for a stored item (as ``JobItem.model_dump`` wrote it)."""
    item = JobItem.model_validate(spec)
    params = synthesis_params(item, speed=item.speed, instructions=item.instructions)
    return SpeechOrder(
        item.input,
        item.voice,
        params,
        priority=priority,
        background=True,
        tenant_id=tenant_id,
        text_param="input",
        response_format=item.response_format,
    )
