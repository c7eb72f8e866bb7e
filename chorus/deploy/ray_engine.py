"""The engine replica of chorus's Ray Serve application: one whole chorus app per replica, driven over handles.

Each replica builds the app ``chorus serve`` runs (:func:`chorus.server.app.create_app`) and runs its lifespan: its
own engine, the speech service (keys, voices, watermark, audit), the shared store. The ingress reaches it two
ways: :meth:`ChorusEngine.forward` runs one HTTP request through that app (the response streams back as it is
made), :meth:`ChorusEngine.speak` speaks one segment of a voice-agent session (the session runs on the ingress).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ray import serve

from chorus.config import Settings
from chorus.deploy.ray_wire import (
    REPLICA_HEADER,
    EngineInfo,
    ForwardedRequest,
    ResponseStart,
    SegmentOpened,
    WireError,
    WireOrder,
    end_to_end,
)
from chorus.engine.request import RequestOutput
from chorus.errors import ChorusError
from chorus.server.app import create_app
from chorus.server.deps import ServerState
from chorus.speech import SpeechService, speech_limits

# A forwarded request whose client left: the app gets this long to see the disconnect and free its slot.
DISCONNECT_GRACE_S = 2.0


class HeldVoice:
    """A cloned (or fine-tuned) voice a replica holds for Ray's multiplexing. Ray evicts the least recently used
    one past ``max_voices`` and calls ``__del__``: the voice's model leaves the backend (the next request for it
    on this replica loads it again from the store)."""

    def __init__(self, voice_id: str, unload: Callable[[str], None] | None) -> None:
        self.voice_id = voice_id
        self._unload = unload

    def __del__(self) -> None:  # Ray calls it on eviction, Python again when the object goes: once is enough
        unload, self._unload = self._unload, None
        if unload is not None:
            unload(self.voice_id)


class ChorusEngine:
    """An engine replica (Ray Serve deployment class). ``max_voices``: cloned voices held at once (LRU)."""

    async def __init__(self, settings: Settings, max_voices: int = 32) -> None:  # type: ignore[misc]  # Ray awaits it
        self.settings = settings
        self.replica_id = str(serve.get_replica_context().replica_id.unique_id)
        self.app = create_app(settings)
        self._lifespan: AbstractAsyncContextManager[Any] | None = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        state: ServerState = self.app.state.chorus
        self.state = state
        # A session's segments: their audit rows are written by the ingress, which sees the bytes delivered.
        self.segments = SpeechService(
            state.engine, state.voice_service, speech_limits(settings), marking=state.marking, audit=None
        )
        cloner = state.voice_service.cloner
        unload = cloner.unload_voice if cloner is not None else None

        async def hold(voice_id: str) -> HeldVoice:
            # Loading happens on the request's own path (the voice service loads a cloned voice from the store the
            # first time this process speaks it); holding it here tells Ray's router this replica has it.
            return HeldVoice(voice_id, unload)

        self._hold = serve.multiplexed(max_num_models_per_replica=max_voices)(hold)

    async def __del__(self) -> None:
        lifespan, self._lifespan = getattr(self, "_lifespan", None), None
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)

    async def check_health(self) -> None:
        """Ray's health check: a dead or stalled engine restarts the replica (as chorus serve exits for its
        supervisor)."""
        if not self.state.engine.is_alive():
            raise RuntimeError("the engine loop is not running")

    async def _hold_voice(self) -> None:
        voice_id = serve.get_multiplexed_model_id()
        if voice_id:
            await self._hold(voice_id)

    # -- calls from the ingress ----------------------------------------------------------------------

    async def describe(self) -> EngineInfo:
        backend = self.state.engine.backend
        crossfade_s = self.state.engine.engine.config.crossfade_s
        return EngineInfo(
            backend=backend.name,
            sample_rate=backend.sample_rate,
            overlap=round(crossfade_s * backend.sample_rate),
            builtin_voices=tuple(self.state.voices.list()),
        )

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        """One HTTP request through this replica's chorus app: a :class:`ResponseStart`, then the body's chunks."""
        await self._hold_voice()
        extra = ((REPLICA_HEADER, self.replica_id.encode()),)
        async for item in exchange(self.app, request, extra):
            yield item

    async def resolve(self, tenant_id: str, voice: str | None) -> str | WireError:
        """A voice's engine id for the tenant, its model loaded here (a session's ``session.update``)."""
        await self._hold_voice()
        try:
            return await asyncio.to_thread(self.state.voice_service.resolve, tenant_id, voice)
        except ChorusError as e:
            return WireError.of(e)

    async def speak(self, order: WireOrder) -> AsyncIterator[SegmentOpened | RequestOutput | WireError]:
        """One segment of a voice-agent session: :class:`SegmentOpened` (or the error that refused it), then its
        outputs, watermarked; an error mid-way comes as a :class:`WireError`. Closing the stream frees the slot."""
        await self._hold_voice()
        try:
            stream = await self.segments.open(order.local())
        except ChorusError as e:
            yield WireError.of(e)
            return
        try:
            mark = stream.receipt.watermark
            yield SegmentOpened(
                stream.request_id, stream.receipt.voice_id, self.replica_id, dict(mark) if mark is not None else None
            )
            try:
                async for out in stream:
                    yield out
            except ChorusError as e:
                yield WireError.of(e)
        finally:
            stream.abort()


async def exchange(
    app: Any, request: ForwardedRequest, extra_headers: Any = ()
) -> AsyncIterator[ResponseStart | bytes]:
    """Run ``request`` through the ASGI ``app`` in this process, yielding its response as it is sent. Closing the
    generator early tells the app the client disconnected (a streamed synthesis then frees its slot)."""
    sent: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_given = False

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await sent.put(message)

    async def run() -> None:
        try:
            await app(request.scope(), receive, send)
        finally:
            sent.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (message := await sent.get()) is not None:
            if message["type"] == "http.response.start":
                headers = end_to_end(message.get("headers", ())) + tuple(extra_headers)
                yield ResponseStart(int(message["status"]), headers)
            elif message["type"] == "http.response.body":
                if body := message.get("body"):
                    yield bytes(body)
                if not message.get("more_body", False):
                    break
    finally:
        gone.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), DISCONNECT_GRACE_S)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
