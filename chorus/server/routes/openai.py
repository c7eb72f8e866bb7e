"""OpenAI-compatible routes: ``POST /v1/audio/speech`` and ``GET /v1/models``."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from chorus.audio.encode import MEDIA_TYPES
from chorus.engine.request import RequestOutput
from chorus.errors import ChorusError, InvalidRequestError
from chorus.server.deps import StateDep, principal_of
from chorus.server.routes.common import submit_speech
from chorus.server.schemas import SpeechRequest
from chorus.server.streaming import (
    AUDIO_CONTENT,
    SSE_CONTENT,
    audio_body,
    encoded_chunks,
    error_event,
    first_output,
    outcome_of,
    sse_event,
)
from chorus.server.timing import WordClock, word_clock
from chorus.speech import SpeechStream

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/audio/speech",
    summary="Generate audio from text (OpenAI-compatible)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {**AUDIO_CONTENT, **SSE_CONTENT},
            "description": "the audio in response_format, or Server-Sent Events with stream_format=sse",
        }
    },
)
async def create_speech(
    body: SpeechRequest, request: Request, state: StateDep, x_request_id: str | None = Header(default=None)
) -> StreamingResponse:
    if not state.accepts_model(body.model):
        raise InvalidRequestError(f"unknown model {body.model!r}; this server runs {state.model_id!r}", param="model")
    if body.timestamps and body.stream_format != "sse":
        raise InvalidRequestError("timestamps come with stream_format sse", param="timestamps")
    voice = body.voice if isinstance(body.voice, str) else body.voice.id
    stream = await submit_speech(
        state,
        text=body.input,
        text_param="input",
        voice=voice,
        knobs=body,
        speed=body.speed,
        principal=principal_of(request),
        instructions=body.instructions,
        x_request_id=x_request_id,
        response_format=body.response_format,
    )
    try:
        first = await first_output(stream, request)
    except ChorusError as e:
        stream.receipt.seal(outcome_of(e))
        raise
    out_rate = state.settings.server.output_sample_rate
    headers = {"X-Request-Id": stream.request_id}
    if first is not None and first.predicted_first_audio_s is not None:
        # It had to wait for a slot: what admission control predicted then (the bench checks it against reality).
        headers["X-Queue-ETA-S"] = f"{first.predicted_first_audio_s:.3f}"
    if body.stream_format == "sse":
        clock = word_clock(state, stream, body.input, first) if body.timestamps else None
        sse = _sse_body(first, stream, body.response_format, out_rate, len(body.input), clock)
        return StreamingResponse(sse, media_type="text/event-stream", headers=headers)
    audio = audio_body(first, stream, body.response_format, out_rate)
    return StreamingResponse(audio, media_type=MEDIA_TYPES[body.response_format], headers=headers)


async def _sse_body(
    first: RequestOutput | None,
    stream: SpeechStream,
    fmt: str,
    out_rate: int,
    num_chars: int,
    clock: WordClock | None = None,
) -> AsyncIterator[bytes]:
    try:
        async for data in encoded_chunks(first, stream, fmt, out_rate):
            if data:
                event: dict[str, object] = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
                if clock is not None:
                    event["words"] = clock.words()
                yield sse_event(event)
    except ChorusError as e:
        yield error_event(e)
        return
    audio_ms = round(1000 * stream.audio_seconds)  # the stream counts every output, the first one included
    usage = {"input_tokens": num_chars, "output_tokens": audio_ms, "total_tokens": num_chars + audio_ms}
    done: dict[str, object] = {"type": "speech.audio.done", "usage": usage}
    if clock is not None:
        done["words"] = clock.rest()  # any word not given with its audio (the last ones; Qwen3: all, spread)
    yield sse_event(done)


@router.get("/models", summary="The loaded model (OpenAI-compatible)")
async def list_models(state: StateDep) -> dict[str, object]:
    backend = state.engine.backend
    return {
        "object": "list",
        "data": [
            {
                "id": state.model_id,
                "object": "model",
                "created": int(state.started_at),
                "owned_by": "chorus",
                "backend": backend.name,
                "sample_rate": backend.sample_rate,
            }
        ],
    }
