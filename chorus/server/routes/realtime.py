"""``WS /v1/audio/speech/stream``: a voice-agent session (see :mod:`chorus.agent.protocol` for the messages).

Authentication: ``Authorization: Bearer KEY`` on the upgrade request, or ``?api_key=KEY`` for browsers (their
WebSocket API cannot set headers; the key then shows in URLs and proxy logs, so prefer the header elsewhere).
A refused key, a draining server or too many sessions get an ``error`` event, then a close frame with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from chorus.agent.outbox import Frame
from chorus.agent.session import AgentSession, SessionContext
from chorus.config import Settings
from chorus.errors import ChorusError, EngineDeadError, InvalidRequestError, QueueFullError
from chorus.server.auth import Principal, principal_for
from chorus.server.deps import ServerState
from chorus.server.errors import error_body
from chorus.server.observability import ServerMetrics

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # authentication refused
CLOSE_TRY_AGAIN = 1013  # too many sessions / draining
CLOSE_GRACE_S = 60.0  # session.close: at most this long to speak what is buffered


class SessionHost(Protocol):
    """What the session loop needs of the process holding it (``ServerState``; the Ray Serve ingress's own)."""

    settings: Settings
    metrics: ServerMetrics
    is_draining: bool
    agent_sessions: int


@router.websocket("/v1/audio/speech/stream")
async def speech_stream(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.chorus
    await serve_session(websocket, state, partial(session_context, state))


def session_context(state: ServerState, principal: Principal) -> SessionContext:
    backend = state.engine.backend
    return SessionContext.of(
        state.settings,
        state.speech,
        principal,
        engine_rate=backend.sample_rate,
        overlap=round(state.engine.engine.config.crossfade_s * backend.sample_rate),
        word_phonemes=getattr(backend, "word_phonemes", None),
    )


async def serve_session(
    websocket: WebSocket, state: SessionHost, context: Callable[[Principal], SessionContext]
) -> None:
    """One session, from the upgrade to the close frame; ``context`` says where its segments are spoken."""
    await websocket.accept()
    try:
        principal = await principal_for(websocket, query_key=True)
        if state.is_draining:
            raise EngineDeadError("the server is shutting down")
        if state.agent_sessions >= state.settings.realtime.max_sessions:
            raise QueueFullError("this server holds as many sessions as it may", retry_after_s=5.0)
    except ChorusError as e:
        code = CLOSE_POLICY if e.status_code in (401, 403) else CLOSE_TRY_AGAIN
        await _refuse(websocket, e, code)
        return
    ctx = context(principal)

    async def send(frame: Frame) -> None:
        if isinstance(frame, bytes):
            await websocket.send_bytes(frame)
        else:
            await websocket.send_json(frame)

    session = AgentSession(ctx, send)
    state.agent_sessions += 1
    state.metrics.agent_sessions.inc()
    reason, code = "session closed", CLOSE_NORMAL
    try:
        await session.start()
        idle_limit = state.settings.realtime.session_idle_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=min(idle_limit, 5.0))
            except TimeoutError:
                if state.is_draining and session.is_idle:
                    reason, code = "the server is shutting down", CLOSE_GOING_AWAY
                    break
                if session.is_idle and session.idle_for() > idle_limit:
                    reason = f"no message for {idle_limit:g} s"
                    break
                continue
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await session.report(InvalidRequestError("send JSON text frames, not binary", param="message"))
                continue
            if not await session.handle(text):
                await session.finish(CLOSE_GRACE_S)
                break
    except WebSocketDisconnect:
        return
    finally:
        state.agent_sessions -= 1
        state.metrics.agent_sessions.dec()
        await session.close()  # frees every engine slot the session holds, whatever ended it
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=code, reason=reason)


async def _refuse(websocket: WebSocket, err: ChorusError, code: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", **error_body(err.error_type, err.message, err.param, err.code)})
        await websocket.close(code=code, reason=err.message[:120])
