"""The async front of the engine, for the server: submit, stream, abort. The loop runs in its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from chorus.engine.engine import Engine
from chorus.engine.request import Request, RequestOutput
from chorus.errors import InvalidRequestError, QueueFullError
from chorus.models.base import SpeechInput, SynthesisParams


def new_request_id() -> str:
    return f"speech-{uuid.uuid4().hex[:20]}"


class ResponseStream:
    """One request's outputs, fed from the engine thread through ``call_soon_threadsafe``."""

    def __init__(self, engine: Engine, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.request_id = request_id
        self._loop = loop
        self._queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self.is_done = False
        self.audio_seconds = 0.0  # audio received so far

    def put_threadsafe(self, out: RequestOutput) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, out)

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self

    async def __anext__(self) -> RequestOutput:
        """The next audio output; raises the request's typed error if it failed."""
        if self.is_done:
            raise StopAsyncIteration
        out = await self._queue.get()
        self.audio_seconds = max(self.audio_seconds, out.audio_seconds)
        if out.is_finished:
            self.is_done = True
            if out.error is not None:
                raise out.error
            if out.audio.size == 0:
                raise StopAsyncIteration
        return out

    def abort(self) -> None:
        """Free the slot at the next step (idempotent; no-op once finished)."""
        if not self.is_done:
            self.is_done = True
            self.engine.abort(self.request_id)


class AsyncEngine:
    def __init__(self, engine: Engine, *, request_timeout_s: float | None = None) -> None:
        self.engine = engine
        self.request_timeout_s = request_timeout_s

    def start(self) -> None:
        self.engine.start()

    async def shutdown(self, drain_timeout_s: float = 0.0) -> None:
        await asyncio.to_thread(self.engine.shutdown, drain_timeout_s)

    async def submit(
        self,
        text: str,
        voice_id: str,
        *,
        params: SynthesisParams | None = None,
        priority: int = 0,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> ResponseStream:
        """Queue a request and return its stream at once (429 / 503 errors raise here)."""
        engine = self.engine
        if engine.num_waiting >= engine.config.queue_limit:  # refuse before doing any work
            raise QueueFullError("the waiting queue is full", retry_after_s=engine.retry_after_s())
        inp = SpeechInput(request_id or new_request_id(), text, voice_id, params or SynthesisParams())
        try:
            # Phonemization / tokenization is CPU work: off the event loop, and off the engine loop.
            prepared = await asyncio.to_thread(engine.backend.preprocess, inp)
        except ValueError as e:
            raise InvalidRequestError(str(e), param="input") from e
        stream = ResponseStream(engine, inp.request_id, asyncio.get_running_loop())
        engine.add_request(
            Request(
                inp,
                stream.put_threadsafe,
                prepared=prepared,
                priority=priority,
                timeout_s=_shortest(timeout_s, self.request_timeout_s),
            )
        )
        return stream


def _shortest(*limits: float | None) -> float | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None
