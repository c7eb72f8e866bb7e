"""Fine-tune jobs (``/v1/fine_tunes``): queued here, trained by ``chorus worker --queue finetune`` (chorus.finetune)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from chorus.finetune.jobs import FineTuneRequest, FineTuneService, event_object, fine_tune_object
from chorus.server.deps import ServerState, StateDep, principal_of, tenant_of
from chorus.server.routes.voices import audit_event

router = APIRouter(prefix="/v1", tags=["fine-tunes"])
FineTuneId = Annotated[str, Path(max_length=40)]


def _service(state: ServerState) -> FineTuneService:
    assert state.fine_tunes is not None  # set at start-up, before any request
    return state.fine_tunes


@router.post("/fine_tunes", status_code=201, summary="Queue a fine-tune of a dataset's voice")
async def create_fine_tune(body: FineTuneRequest, request: Request, state: StateDep) -> JSONResponse:
    service = _service(state)
    key_id = principal_of(request).key_id
    record = await asyncio.to_thread(service.create, tenant_of(request), body, key_id=key_id)
    audit_event(state, request, "fine_tune.create", record.id, {"dataset": record.dataset_id, "name": record.name})
    return JSONResponse(fine_tune_object(record), status_code=201, headers={"Location": f"/v1/fine_tunes/{record.id}"})


@router.get("/fine_tunes", summary="The tenant's fine-tunes, newest first")
async def list_fine_tunes(
    request: Request,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=40, description="the last id of the previous page")] = None,
) -> dict[str, Any]:
    records = await asyncio.to_thread(_service(state).store.list, tenant_of(request), limit=limit + 1, before=after)
    page = records[:limit]
    return {
        "object": "list",
        "data": [fine_tune_object(r) for r in page],
        "has_more": len(records) > limit,
        "last_id": page[-1].id if page else None,
    }


@router.get("/fine_tunes/{fine_tune_id}", summary="One fine-tune: status, progress, and its voice when done")
async def get_fine_tune(fine_tune_id: FineTuneId, request: Request, state: StateDep) -> dict[str, Any]:
    return fine_tune_object(await asyncio.to_thread(_service(state).store.get, tenant_of(request), fine_tune_id))


@router.post("/fine_tunes/{fine_tune_id}/cancel", summary="Cancel a queued or running fine-tune")
async def cancel_fine_tune(fine_tune_id: FineTuneId, request: Request, state: StateDep) -> dict[str, Any]:
    record = await asyncio.to_thread(_service(state).store.cancel, tenant_of(request), fine_tune_id)
    audit_event(state, request, "fine_tune.cancel", record.id, {})
    return fine_tune_object(record)


@router.get("/fine_tunes/{fine_tune_id}/events", summary="A fine-tune's log: status changes, step, loss, ETA")
async def fine_tune_events(
    fine_tune_id: FineTuneId,
    request: Request,
    state: StateDep,
    after: Annotated[int, Query(ge=0, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    events = await asyncio.to_thread(
        _service(state).store.events, tenant_of(request), fine_tune_id, after=after, limit=limit
    )
    return {"object": "list", "data": [event_object(e) for e in events]}


@router.get(
    "/fine_tunes/{fine_tune_id}/loss.png",
    summary="A finished Qwen3 fine-tune's loss curve",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def fine_tune_loss_curve(fine_tune_id: FineTuneId, request: Request, state: StateDep) -> Response:
    png = await asyncio.to_thread(_service(state).loss_curve, tenant_of(request), fine_tune_id)
    return Response(png, media_type="image/png")
