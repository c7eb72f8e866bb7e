"""The engine's front for the rest of the program: queue, stream, abort, read state. The loop runs in its own
thread; a request's outputs reach an asyncio caller through :class:`ResponseStream`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import uuid
from collections.abc import AsyncIterator

from chorus.engine.config import RequestInfo
from chorus.engine.engine import Engine
from chorus.engine.request import Request, RequestOutput
from chorus.errors import QueueFullError
from chorus.models.base import Backend


def new_request_id() -> str:
    return f"speech-{uuid.uuid4().hex[:20]}"


class ResponseStream:
    """One request's outputs, fed from the engine thread through ``call_soon_threadsafe``."""

    def __init__(self, engine: AsyncEngine, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
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


class Preparing:
    """Requests checked but not queued yet (being prepared, or waiting their turn to be): whoever arrives later
    queues behind them, so admission counts their text (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._entries: dict[int, tuple[int, int]] = {}  # ticket -> (priority, characters)

    def enter(self, priority: int, chars: int) -> int:
        with self._lock:
            ticket = next(self._tickets)
            self._entries[ticket] = (priority, chars)
            return ticket

    def leave(self, ticket: int) -> None:
        with self._lock:
            self._entries.pop(ticket, None)

    def chars_ahead(self, priority: int, ticket: int | None = None) -> int:
        """Characters of the requests a newcomer of ``priority`` queues behind: those of no lower priority that
        entered before ``ticket`` (all of them when it has none yet)."""
        with self._lock:
            return sum(
                chars
                for t, (prio, chars) in self._entries.items()
                if prio >= priority and (ticket is None or t < ticket)
            )

    def __len__(self) -> int:
        return len(self._entries)


class AsyncEngine:
    """The engine as the rest of the program sees it: queue a prepared request, abort one, read its state.
    Building requests is :class:`chorus.speech.SpeechService`'s job; nothing outside the engine package reaches
    into the engine loop itself."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.preparing = Preparing()

    def start(self) -> None:
        self.engine.start()

    async def shutdown(self, drain_timeout_s: float = 0.0) -> None:
        await asyncio.to_thread(self.engine.shutdown, drain_timeout_s)

    def close(self) -> None:
        self.engine.shutdown()

    def check_queue(
        self,
        priority: int = 0,
        timeout_s: float | None = None,
        plays_at: float | None = None,
        *,
        arrival: float | None = None,
        ticket: int | None = None,
    ) -> None:
        """429 when the waiting queue is full, or when the latest forecast shows this newcomer (arrived at
        ``arrival``, and behind the requests being prepared before its ``ticket``) could not start within its
        wait limit: callers ask before doing any work for a request."""
        if self.is_queue_full:
            raise QueueFullError("the waiting queue is full", retry_after_s=self.engine.retry_after_s())
        forecast = self.engine.forecast
        if forecast is None:
            return
        ahead = self.preparing.chars_ahead(priority, ticket)
        refusal = forecast.early_refusal(priority, timeout_s, plays_at, arrival=arrival, chars_ahead=ahead)
        if refusal is not None:
            raise refusal

    def add(self, req: Request) -> None:
        self.engine.add_request(req)

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)

    def status(self, request_id: str) -> RequestInfo | None:
        return self.engine.status(request_id)

    def is_alive(self) -> bool:
        return self.engine.is_alive()

    @property
    def backend(self) -> Backend:
        return self.engine.backend

    @property
    def num_running(self) -> int:
        return self.engine.num_running

    @property
    def num_waiting(self) -> int:
        return self.engine.num_waiting

    @property
    def is_queue_full(self) -> bool:
        return self.engine.num_waiting >= self.engine.config.queue_limit

    def stats(self) -> dict[str, object]:
        """Slots, queue, mode, what admission control learned and the engine's counters (``/v1/stats``)."""
        engine = self.engine
        return {
            "active_slots": engine.num_running,
            "max_slots": engine.config.max_slots,
            "waiting": engine.num_waiting,
            "queue_limit": engine.config.queue_limit,
            "mode": engine.config.mode,
            "backend": engine.backend.name,
            "num_workers": engine.backend.num_workers,
            # CPU admission control: what it learned (margin on CPU estimates, share of a core a worker gets).
            "admission": engine.admission.describe() if engine.admission is not None else None,
            **engine.metrics.snapshot(),
        }
