"""The ingress of chorus's Ray Serve application: HTTP is forwarded to engine replicas, voice-agent sessions run
here and speak each segment on a replica (see :mod:`chorus.deploy.ray_app` for why)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError

from chorus.agent.session import SessionContext
from chorus.audit import AuditWriter, SynthesisReceipt
from chorus.config import Settings
from chorus.deploy.ray_wire import EngineInfo, ForwardedRequest, ResponseStart, SegmentOpened, WireError, WireOrder
from chorus.engine.request import RequestOutput
from chorus.errors import ChorusError, EngineDeadError, QueueFullError
from chorus.server.auth import Principal, keys_required, principal_for
from chorus.server.errors import install_error_handlers
from chorus.server.observability import ServerMetrics
from chorus.server.routes import consents, voices
from chorus.server.routes.realtime import serve_session
from chorus.server.uploads import UploadLimit
from chorus.speech import SpeechOrder
from chorus.store.audit import AuditLog
from chorus.store.keys import KeyStore
from chorus.store.settings import open_store
from chorus.store.voices import VoiceStore
from chorus.voices.catalog import VoiceCatalog
from chorus.voices.preprocess import ReferenceLimits
from chorus.voices.service import VOICE_ID_PREFIX

log = logging.getLogger(__name__)
# Routes the engine replicas' chorus app answers, forwarded as they are (the voice lifecycle included: the store is
# shared, so a voice registered through any replica is spoken by every one).
FORWARDED = {
    "/v1/audio/speech": ["POST"],
    "/v1/models": ["GET"],
    "/v1/audio/voices": ["GET", "POST"],
    "/v1/audio/voices/{voice_id}": ["GET", "DELETE"],
    "/v1/audio/voice_consents": ["GET", "POST"],
    "/v1/audio/voice_consents/challenges": ["POST"],
    "/v1/audio/voice_consents/{consent_id}": ["GET", "DELETE"],
    "/health": ["GET"],
    "/ready": ["GET"],
}


@dataclass
class IngressState:
    """The ingress's ``app.state.chorus``: what authentication and the session loop read (see ``SessionHost``)."""

    settings: Settings
    engine: Any  # the engine deployment's handle
    keys: KeyStore
    keys_required: bool
    voice_store: VoiceStore
    audit: AuditWriter
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    is_draining: bool = False
    agent_sessions: int = 0
    info: EngineInfo | None = None
    catalog: VoiceCatalog | None = None

    async def engine_info(self) -> tuple[EngineInfo, VoiceCatalog]:
        """What every engine replica of this config shares, asked once."""
        if self.info is None or self.catalog is None:
            info = await call(self.engine.describe.remote())
            self.info, self.catalog = info, VoiceCatalog(list(info.builtin_voices))
        return self.info, self.catalog

    def voice_key(self, catalog: VoiceCatalog, tenant_id: str, voice: str | None) -> str | None:
        """Ray's multiplexed model id for a voice: the id of a cloned or fine-tuned voice (blocking: a store
        lookup by name). None for a built-in voice, which every replica holds: its requests go to any replica."""
        name = (voice or "").strip()
        if not name:
            return None
        with contextlib.suppress(ChorusError):
            catalog.resolve(name)
            return None
        if name.startswith(VOICE_ID_PREFIX):
            return name
        record = self.voice_store.find_by_name(tenant_id, name)
        return record.id if record is not None else None

    def handle(self, model_id: str | None, *, stream: bool = False) -> Any:
        options: dict[str, Any] = {"stream": stream}
        if model_id:
            options["multiplexed_model_id"] = model_id
        return self.engine.options(**options)


async def call(response: Any) -> Any:
    """A handle call's result; Ray's failures as chorus's errors (so clients get chorus's error JSON)."""
    try:
        return await response
    except (ChorusError, StopAsyncIteration):
        raise
    except BackPressureError as e:
        raise QueueFullError("every engine replica is at its limit of requests", retry_after_s=1.0) from e
    except Exception as e:
        raise EngineDeadError(f"no engine replica could take the request ({type(e).__name__})") from e


class RemoteVoices:
    """The session's voice resolver (``session.update``): names are checked on the replica likely to speak them."""

    def __init__(self, state: IngressState, catalog: VoiceCatalog) -> None:
        self.state = state
        self.catalog = catalog

    def builtin_id(self, name: str | None) -> str | None:
        try:
            return self.catalog.resolve(name).voice_id
        except ChorusError:
            return None

    def resolve(self, tenant_id: str, name: str | None, *, param: str = "voice") -> str:
        """Blocking (the session calls it in a worker thread)."""
        handle = self.state.handle(self.state.voice_key(self.catalog, tenant_id, name))
        try:
            result = handle.resolve.remote(tenant_id, name).result()
        except Exception as e:
            raise EngineDeadError(f"no engine replica could check the voice ({type(e).__name__})") from e
        if isinstance(result, WireError):
            raise result.rebuild()
        return str(result)


class RemoteStream:
    """A segment's outputs, streamed from the replica speaking it (a ``SegmentStream`` for the session)."""

    def __init__(self, calls: Any, receipt: SynthesisReceipt) -> None:
        self._calls = calls
        self.receipt = receipt
        self.audio_seconds = 0.0
        self.is_done = False

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.is_done:
            raise StopAsyncIteration
        try:
            item = await call(self._calls.__anext__())
        except BaseException:
            self.is_done = True
            raise
        if isinstance(item, WireError):
            self.is_done = True
            raise item.rebuild()
        out: RequestOutput = item
        self.audio_seconds = max(self.audio_seconds, out.audio_seconds)
        return out

    def abort(self) -> None:
        if not self.is_done:
            self.is_done = True
            self._calls.cancel()


class RemoteSpeech:
    """The session's ``SpeechSource`` on the ingress: each segment is one streaming call to an engine replica,
    routed to a replica holding its voice. The audit row is written here, where the delivered bytes are seen."""

    def __init__(self, state: IngressState, catalog: VoiceCatalog) -> None:
        self.state = state
        self.remote_voices = RemoteVoices(state, catalog)

    @property
    def voices(self) -> RemoteVoices:
        return self.remote_voices

    async def open(self, order: SpeechOrder) -> RemoteStream:
        state = self.state
        model_id = await asyncio.to_thread(state.voice_key, self.remote_voices.catalog, order.tenant_id, order.voice)
        calls = state.handle(model_id, stream=True).speak.remote(WireOrder.of(order))
        try:
            first = await call(calls.__anext__())
        except StopAsyncIteration as e:
            raise EngineDeadError("the engine replica ended the segment before it began") from e
        if isinstance(first, WireError):
            raise first.rebuild()
        opened: SegmentOpened = first
        receipt = SynthesisReceipt(
            state.audit,
            tenant_id=order.tenant_id,
            key_id=order.key_id,
            voice_id=opened.voice_id,
            request_id=opened.request_id,
            text=order.text,
            response_format=order.response_format,
        )
        receipt.watermark = opened.watermark
        return RemoteStream(calls, receipt)


def build_ingress_app(settings: Settings, engine: Any) -> FastAPI:
    """The ingress's ASGI app (one per ingress replica; the store opens in its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sql, blobs = await asyncio.to_thread(open_store, settings.store, settings.data_dir)
        audit = AuditWriter(AuditLog(sql), retention_days=settings.safety.audit_retention_days)
        app.state.chorus = IngressState(
            settings, engine, KeyStore(sql), keys_required(settings), VoiceStore(sql, blobs), audit
        )
        try:
            yield
        finally:
            app.state.chorus.is_draining = True
            await asyncio.to_thread(audit.close)
            sql.close()

    app = FastAPI(title="chorus (Ray Serve ingress)", lifespan=lifespan)
    install_error_handlers(app)
    for path, methods in FORWARDED.items():
        app.add_api_route(path, forward, methods=methods, include_in_schema=False)
    app.add_api_websocket_route("/v1/audio/speech/stream", speech_stream)
    # The same limits as chorus serve: an upload too large is refused before its body is read whole.
    app.add_middleware(
        UploadLimit, max_bytes=ReferenceLimits().max_bytes, paths=voices.UPLOAD_PATHS | consents.UPLOAD_PATHS
    )
    return app


async def forward(request: Request) -> StreamingResponse:
    """Any forwarded route: the request goes to an engine replica (one holding the voice, for speech)."""
    state: IngressState = request.app.state.chorus
    body = await request.body()
    model_id = None
    if request.url.path == "/v1/audio/speech":
        model_id = await _speech_voice_key(state, request, body)
    client = (request.client.host, request.client.port) if request.client else None
    forwarded = ForwardedRequest(
        request.method,
        request.url.path,
        request.scope.get("query_string", b""),
        tuple(request.headers.raw),
        body,
        client,
    )
    chunks = state.handle(model_id, stream=True).forward.remote(forwarded)
    try:
        start = await call(chunks.__anext__())
    except StopAsyncIteration as e:
        raise EngineDeadError("the engine replica gave no response") from e
    if not isinstance(start, ResponseStart):
        chunks.cancel()
        raise EngineDeadError("the engine replica's response began with its body")
    response = StreamingResponse(_body(chunks), status_code=start.status)
    response.raw_headers = list(start.headers)
    return response


async def _body(chunks: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as e:  # a replica lost mid-stream: the client sees the body end early
        log.warning("an engine replica failed mid-response: %s", e)
    finally:
        chunks.cancel()


async def _speech_voice_key(state: IngressState, request: Request, body: bytes) -> str | None:
    """The voice of a speech request, as a multiplexed model id (None when there is no preference). The replica
    checks everything again: a bad key or body gets its error from chorus's own route."""
    try:
        voice = json.loads(body).get("voice")
        if isinstance(voice, dict):
            voice = voice.get("id")
        if not isinstance(voice, str):
            return None
        principal = await principal_for(request)
        _, catalog = await state.engine_info()
    except (ValueError, AttributeError, ChorusError):
        return None
    return await asyncio.to_thread(state.voice_key, catalog, principal.tenant_id, voice)


async def speech_stream(websocket: WebSocket) -> None:
    """``WS /v1/audio/speech/stream``: chorus's own session loop, its segments spoken on engine replicas."""
    state: IngressState = websocket.app.state.chorus
    try:
        info, catalog = await state.engine_info()
    except ChorusError:
        info, catalog = None, None
    if info is None or catalog is None:
        await websocket.close(code=1013, reason="no engine replica answers")
        return
    await serve_session(websocket, state, partial(_context, state, info, catalog))


def _context(state: IngressState, info: EngineInfo, catalog: VoiceCatalog, principal: Principal) -> SessionContext:
    # No word_phonemes: the backend is on the replicas, so word times are spread over a segment's audio.
    return SessionContext.of(
        state.settings, RemoteSpeech(state, catalog), principal, engine_rate=info.sample_rate, overlap=info.overlap
    )


@serve.ingress()
class ChorusIngress:
    """The ingress deployment class: its FastAPI app is built on each replica (nothing is built at import)."""

    def __init__(self, settings: Settings, engine: Any) -> None:
        self.settings = settings
        self.engine = engine

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self.settings, self.engine)
