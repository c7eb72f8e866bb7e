"""vTTS-compatible routes: ``POST /v1/tts/generate`` (SSE), ``GET /v1/voices``, ``GET /v1/stats``.

SSE events of ``/v1/tts/generate``: ``queued`` {request_id, queue_position, eta_s, fleet_position} while waiting,
``audio`` {request_id, index, audio (base64 of the response format; pcm = s16le mono), sample_rate,
format, and with ``timestamps: true`` the words whose audio starts in it}, then ``done`` {request_id, chunks,
audio_seconds, (words)} or ``error`` {error: {type, message, param}}.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from chorus.errors import ChorusError
from chorus.server.deps import ServerState, StateDep, principal_of, tenant_of
from chorus.server.routes.common import submit_speech
from chorus.server.routes.voices import builtin_voice_object, cloned_voice_object
from chorus.server.schemas import GenerateRequest
from chorus.server.streaming import SSE_CONTENT, encoded_chunks, error_event, outcome_of, sse_event
from chorus.server.timing import word_clock
from chorus.speech import SpeechStream

router = APIRouter(prefix="/v1", tags=["vtts"])
QUEUE_REPORT_S = 0.5


@router.post(
    "/tts/generate",
    summary="Stream speech as Server-Sent Events (vTTS-compatible)",
    response_class=StreamingResponse,
    responses={200: {"content": SSE_CONTENT, "description": "queued, audio, then done (or error) events"}},
)
async def generate(
    body: GenerateRequest, request: Request, state: StateDep, x_request_id: str | None = Header(default=None)
) -> StreamingResponse:
    stream = await submit_speech(
        state,
        text=body.text,
        text_param="text",
        voice=body.voice,
        knobs=body,
        speed=body.speed,
        principal=principal_of(request),
        x_request_id=x_request_id,
        response_format=body.response_format,
    )
    events = _events(state, stream, body.response_format, body.text if body.timestamps else None)
    return StreamingResponse(events, media_type="text/event-stream", headers={"X-Request-Id": stream.request_id})


async def _events(state: ServerState, stream: SpeechStream, fmt: str, timed_text: str | None) -> AsyncIterator[bytes]:
    out_rate = state.settings.server.output_sample_rate
    rid = stream.request_id
    try:
        # Report the queue position until the first audio arrives.
        first_task = asyncio.ensure_future(anext(stream, None))
        while not first_task.done():
            info = state.engine.status(rid)
            if info is not None and info.queue_position is not None:
                queued: dict[str, object] = {"request_id": rid, "queue_position": info.queue_position}
                queued["eta_s"] = info.eta_s
                if state.fleet is not None:
                    queued["fleet_position"] = state.fleet.position(info)
                yield sse_event(queued, "queued")
            await asyncio.wait({first_task}, timeout=QUEUE_REPORT_S)
        first = first_task.result()
        clock = word_clock(state, stream, timed_text, first) if timed_text is not None else None
        index = 0
        async for data in encoded_chunks(first, stream, fmt, out_rate):
            if data:
                payload = {
                    "request_id": rid,
                    "index": index,
                    "audio": base64.b64encode(data).decode(),
                    "sample_rate": out_rate,
                    "format": fmt,
                }
                if clock is not None:
                    payload["words"] = clock.words()
                yield sse_event(payload, "audio")
                index += 1
        done: dict[str, object] = {"request_id": rid, "chunks": index, "audio_seconds": round(stream.audio_seconds, 3)}
        if clock is not None:
            done["words"] = clock.rest()
        yield sse_event(done, "done")
    except ChorusError as e:
        stream.receipt.seal(outcome_of(e))
        yield error_event(e, "error")
    finally:
        stream.abort()
        stream.receipt.seal("aborted")  # the client left before the body ended (else it is sealed already)


@router.get("/voices", summary="Voices, built-in and cloned (vTTS-compatible)")
async def list_voices(request: Request, state: StateDep) -> dict[str, object]:
    records = await asyncio.to_thread(state.voice_service.list, tenant_of(request))
    builtin = [builtin_voice_object(v) for v in state.voices.list()]
    return {"voices": builtin + [cloned_voice_object(r) for r in records]}


@router.get("/stats", summary="Engine statistics (vTTS-compatible)")
async def stats(state: StateDep) -> dict[str, object]:
    return {
        **state.engine.stats(),
        # Per-voice work done by this process: "embedded"/"built" at registration, "loaded" (from the store,
        # once per voice), "rebuilt" (a stored model made for another backend).
        "voice_work": dict(state.voice_service.counts),
    }
