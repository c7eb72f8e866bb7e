"""Operations: ``/health`` (the process answers), ``/ready`` (it can take work), ``/metrics``, request status."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from chorus.errors import NotFoundError
from chorus.server.deps import StateDep, require_admin, tenant_of

router = APIRouter(tags=["ops"])  # open: probes carry no key
authenticated_router = APIRouter(tags=["ops"])


@router.get("/health", summary="Liveness and engine state")
async def health(state: StateDep) -> JSONResponse:
    engine = state.engine
    alive = engine.is_alive()
    body = {
        "status": "ok" if alive else "engine_dead",
        "model": state.model_id,
        "backend": engine.backend.name,
        "device": state.settings.model.device,
        "is_loaded": True,
        "engine_alive": alive,
        "active_slots": engine.num_running,
        "waiting": engine.num_waiting,
    }
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/ready", summary="Readiness: 200 when new requests are accepted")
async def ready(state: StateDep) -> JSONResponse:
    engine = state.engine
    reasons = []
    if not engine.is_alive():
        reasons.append("engine is not running")
    if state.is_draining:
        reasons.append("server is draining")
    if engine.is_queue_full:
        reasons.append("waiting queue is full")
    return JSONResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)


@authenticated_router.get(
    "/metrics",
    summary="Prometheus metrics (an admin key where keys are required)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "the Prometheus text exposition format"}},
)
async def metrics(request: Request, state: StateDep) -> Response:
    require_admin(request, "/metrics")
    body, content_type = await asyncio.to_thread(state.metrics.exposition)
    return Response(body, media_type=content_type)


@authenticated_router.get("/v1/requests/{request_id}", summary="Status, queue position and ETA of a request")
async def request_status(request_id: str, request: Request, state: StateDep) -> dict[str, object]:
    info = state.engine.status(request_id)
    if info is None or state.speech.tenant_of_request(request_id) != tenant_of(request):
        raise NotFoundError(f"no waiting or running request {request_id!r}", param="request_id")
    body: dict[str, object] = {
        "id": info.request_id,
        "status": info.status,
        "queue_position": info.queue_position,
        "eta_s": info.eta_s,
    }
    if state.fleet is not None:
        view = state.fleet.view
        body |= {"fleet_position": state.fleet.position(info), "fleet_waiting": view.num_waiting}
        body["fleet_replicas"] = len(view.replicas)
    return body


@authenticated_router.get(
    "/v1/fleet", summary="The replicas sharing this database: slots, queues, Retry-After (an admin key)"
)
async def fleet(request: Request, state: StateDep) -> dict[str, object]:
    require_admin(request, "/v1/fleet")
    if state.fleet is None:
        raise NotFoundError("the fleet heartbeat is off on this server (server.fleet_heartbeat_s: 0)")
    return state.fleet.describe()
