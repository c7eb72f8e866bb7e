"""From a request's engine stream to HTTP bodies: raw audio (chunked) or Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import numpy as np
from starlette.requests import Request

from chorus.audio.encode import MEDIA_TYPES, RAW_FORMATS, make_encoder
from chorus.audio.resample import StreamResampler
from chorus.engine.request import RequestOutput
from chorus.errors import ChorusError, RequestAbortedError
from chorus.server.errors import error_body
from chorus.speech import SpeechStream

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.1
# What these bodies are, for the routes' OpenAPI ``responses``: audio in each response_format's media type, or SSE.
AUDIO_CONTENT: dict[str, dict[str, object]] = {media_type: {} for media_type in MEDIA_TYPES.values()}
SSE_CONTENT: dict[str, dict[str, object]] = {"text/event-stream": {}}


async def first_output(stream: SpeechStream, request: Request) -> RequestOutput | None:
    """Wait for the first audio (so errors before it still get a proper status code), watching for the
    client leaving meanwhile: a client gone while queued frees its place at once."""
    task = asyncio.ensure_future(anext(stream, None))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise RequestAbortedError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
            stream.abort()


async def pcm_chunks(first: RequestOutput | None, stream: SpeechStream, out_rate: int) -> AsyncIterator[np.ndarray]:
    """Float32 chunks at ``out_rate``; aborts the request if the consumer stops early (disconnect)."""
    try:
        if first is None:
            return
        resampler = StreamResampler(first.sample_rate, out_rate)
        yield resampler.process(first.audio)
        async for out in stream:
            yield resampler.process(out.audio)
        yield resampler.process(np.zeros(0, dtype=np.float32), last=True)
    finally:
        stream.abort()


async def audio_body(
    first: RequestOutput | None, stream: SpeechStream, fmt: str, out_rate: int
) -> AsyncIterator[bytes]:
    try:
        async for data in encoded_chunks(first, stream, fmt, out_rate):
            if data:
                yield data
    except ChorusError as e:
        # The headers are gone already: end the body short and log; the client sees a truncated stream.
        log.warning("request %s failed mid-stream: %s", stream.request_id, e.message)


def sse_event(data: dict[str, object], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def encoded_chunks(
    first: RequestOutput | None,
    stream: SpeechStream,
    fmt: str,
    out_rate: int,
) -> AsyncIterator[bytes]:
    """Encoded pieces (possibly empty), then the encoder's tail; raises ChorusError on failure. Every byte goes
    through the request's audit receipt, which is sealed with the outcome when the body ends however it ends.

    A compressed format is encoded off the event loop (on asyncio's default threads): mp3 takes ~11 ms of
    CPU per second of audio, and a 4 s piece on the loop would hold up every other request's bytes for 45 ms."""
    receipt = stream.receipt
    outcome = "aborted"  # unless it ends below: the client went away
    try:
        encoder = make_encoder(fmt, out_rate)
        offload = fmt not in RAW_FORMATS
        async for chunk in pcm_chunks(first, stream, out_rate):
            data = await asyncio.to_thread(encoder.encode, chunk) if offload else encoder.encode(chunk)
            receipt.delivered(data)
            yield data
        tail = encoder.finish()
        receipt.delivered(tail)
        yield tail
        outcome = "ok"
    except ChorusError as e:
        outcome = outcome_of(e)
        raise
    finally:
        receipt.audio_seconds = stream.audio_seconds
        receipt.seal(outcome)


def outcome_of(err: ChorusError) -> str:
    """An audit row's outcome for a failed request: the error's code, else its type."""
    return err.code or err.error_type


def error_event(err: ChorusError, event: str | None = None) -> bytes:
    payload = error_body(err.error_type, err.message, err.param, err.code)
    if event is None:
        payload = {"type": "error", **payload}
    return sse_event(payload, event)
