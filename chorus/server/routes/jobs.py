"""Batch jobs (``/v1/jobs``) and their webhooks (``/v1/webhooks``): see chorus.jobs and chorus.store.jobs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from chorus.errors import InvalidRequestError
from chorus.jobs.items import JobItem
from chorus.server.deps import ServerState, StateDep, principal_of, require_admin, tenant_of
from chorus.server.streaming import AUDIO_CONTENT
from chorus.store.jobs import ItemRecord, JobRecord
from chorus.store.tables import EventStatus
from chorus.store.webhooks import EventRecord
from chorus.webhooks.ssrf import WebhookURLError, check_url

router = APIRouter(prefix="/v1", tags=["jobs"])

MetadataValue = str | int | float | bool | None


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048, description="https URL that receives job.* events")


class JobRequest(BaseModel):
    """``POST /v1/jobs``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [{"input": "Hello there.", "voice": "alloy"}]}]}
    )
    items: list[JobItem] = Field(min_length=1, description="at most jobs.max_items lines")
    webhook: WebhookTarget | None = None
    metadata: dict[str, MetadataValue] | None = Field(default=None, max_length=32)


class InvalidWebhookError(InvalidRequestError):
    def __init__(self, err: WebhookURLError) -> None:
        super().__init__(str(err), param="webhook.url")
        self.code = err.code


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _progress(job: JobRecord, items: list[ItemRecord] | None, concurrency: int) -> dict[str, Any]:
    counts = job.counts
    ended = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    progress: dict[str, Any] = {"total": job.item_count, "done": ended}
    progress.update({s: counts.get(s, 0) for s in ("queued", "running", "succeeded", "failed", "cancelled")})
    eta = None
    if items is not None and job.status in ("queued", "running"):
        spans = [
            (i.finished_at - i.started_at).total_seconds()
            for i in items
            if i.status == "succeeded" and i.started_at and i.finished_at
        ]
        if spans:  # the mean item so far, for what is left, at the concurrency one replica runs
            eta = round(sum(spans) / len(spans) * (job.item_count - ended) / concurrency, 1)
    progress["eta_s"] = eta
    return progress


def _item_object(job_id: str, item: ItemRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "n": item.n,
        "status": item.status,
        "attempts": item.attempts,
        "voice": item.spec.get("voice"),
        "response_format": item.spec.get("response_format", "mp3"),
    }
    if item.status == "succeeded":
        body.update(
            audio_url=f"/v1/jobs/{job_id}/items/{item.n}/audio",
            audio_s=item.audio_s,
            content_type=item.content_type,
            sha256=item.result_sha256,
        )
    if item.error is not None:
        body["error"] = item.error
    return body


def job_object(job: JobRecord, items: list[ItemRecord] | None, concurrency: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "metadata": job.metadata,
        "webhook": {"url": job.webhook_url} if job.webhook_url else None,
        "progress": _progress(job, items, concurrency),
    }
    if items is not None:
        body["items"] = [_item_object(job.id, i) for i in items]
    return body


def _event_object(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "webhook.event",
        "type": event.type,
        "job_id": event.job_id,
        "url": event.url,
        "status": event.status,
        "attempts": event.attempts,
        "last_status": event.last_status,
        "last_error": event.last_error,
        "created_at": _ts(event.created_at),
        "next_attempt_at": _ts(event.next_attempt_at) if event.status == "pending" else None,
        "delivered_at": _ts(event.delivered_at),
    }


def _check_items(state: ServerState, tenant_id: str, items: list[JobItem]) -> None:
    """Refuse the whole job at once (400 naming the item) rather than fail its lines one by one later."""
    limit = state.settings.server.max_input_chars
    for n, item in enumerate(items):
        if len(item.input) > limit:
            raise InvalidRequestError(
                f"items[{n}].input is {len(item.input)} characters; the limit is {limit}", param=f"items[{n}].input"
            )
        if not item.input.strip():
            raise InvalidRequestError(f"items[{n}].input is blank", param=f"items[{n}].input")
    for voice in sorted({item.voice for item in items}):
        n = next(i for i, item in enumerate(items) if item.voice == voice)
        if state.speech.voices.builtin_id(voice) is None:
            state.speech.voices.resolve(tenant_id, voice, param=f"items[{n}].voice")


@router.post("/jobs", status_code=201, summary="Queue a batch job: many lines, synthesised in the background")
async def create_job(body: JobRequest, request: Request, state: StateDep) -> JSONResponse:
    principal = principal_of(request)
    jobs = state.settings.jobs
    if len(body.items) > jobs.max_items:
        raise InvalidRequestError(f"{len(body.items)} items; the limit is {jobs.max_items}", param="items")
    url = body.webhook.url if body.webhook is not None else None
    if url is not None:
        try:
            check_url(url, state.webhook_policy)
        except WebhookURLError as e:
            raise InvalidWebhookError(e) from e
    await asyncio.to_thread(_check_items, state, principal.tenant_id, body.items)
    record = await asyncio.to_thread(
        lambda: state.jobs.create(
            principal.tenant_id,
            [item.model_dump(exclude_none=True) for item in body.items],
            key_id=principal.key_id,
            metadata=body.metadata,
            webhook_url=url,
        )
    )
    return JSONResponse(
        job_object(record, None, jobs.concurrency), status_code=201, headers={"Location": f"/v1/jobs/{record.id}"}
    )


@router.get("/jobs", summary="The tenant's jobs, newest first")
async def list_jobs(
    request: Request,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=40, description="a job id: the page after it")] = None,
) -> dict[str, Any]:
    records = await asyncio.to_thread(state.jobs.list, tenant_of(request), limit=limit, before=before)
    concurrency = state.settings.jobs.concurrency
    data = [job_object(r, None, concurrency) for r in records]
    return {"object": "list", "data": data, "has_more": len(records) == limit}


@router.get("/jobs/{job_id}", summary="A job: progress, ETA and every item's status")
async def get_job(job_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    tenant = tenant_of(request)
    record = await asyncio.to_thread(state.jobs.get, tenant, job_id)
    items = await asyncio.to_thread(state.jobs.items, tenant, job_id)
    return job_object(record, items, state.settings.jobs.concurrency)


@router.get(
    "/jobs/{job_id}/items/{n}/audio",
    summary="One item's audio",
    response_class=Response,
    responses={200: {"content": AUDIO_CONTENT, "description": "the item's audio, in its response_format"}},
)
async def get_item_audio(job_id: str, n: Annotated[int, Path(ge=0)], request: Request, state: StateDep) -> Response:
    item, audio = await asyncio.to_thread(state.jobs.result, tenant_of(request), job_id, n)
    headers = {"X-Audio-Seconds": f"{item.audio_s or 0:.3f}", "ETag": f'"{item.result_sha256}"'}
    return Response(audio, media_type=item.content_type or "application/octet-stream", headers=headers)


@router.post("/jobs/{job_id}/cancel", summary="Cancel what has not run yet (and stop what runs)")
async def cancel_job(job_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    tenant = tenant_of(request)
    record = await asyncio.to_thread(state.jobs.cancel, tenant, job_id)
    state.wake_webhooks()
    items = await asyncio.to_thread(state.jobs.items, tenant, job_id)
    return job_object(record, items, state.settings.jobs.concurrency)


# -- webhooks ---------------------------------------------------------------------------------------


def _secret_object(state: ServerState, tenant_id: str, rotated: bool) -> dict[str, Any]:
    row = (
        state.webhook_store.rotate(tenant_id, state.settings.webhooks.rotation_overlap_s)
        if rotated
        else (state.webhook_store.secret(tenant_id))
    )
    previous = row.previous_until if row.previous_secret else None
    return {
        "object": "webhook.secret",
        "secret": row.secret,
        "rotated_at": _ts(row.rotated_at),
        "previous_valid_until": _ts(previous),
    }


@router.get("/webhooks/secret", tags=["webhooks"], summary="The secret that signs this tenant's webhooks")
async def get_webhook_secret(request: Request, state: StateDep) -> dict[str, Any]:
    require_admin(request, "reading the webhook secret")
    return await asyncio.to_thread(_secret_object, state, tenant_of(request), False)


@router.post(
    "/webhooks/secret/rotate",
    tags=["webhooks"],
    summary="A new signing secret; the old one still signs (a second signature) for webhooks.rotation_overlap_s",
)
async def rotate_webhook_secret(request: Request, state: StateDep) -> dict[str, Any]:
    require_admin(request, "rotating the webhook secret")
    return await asyncio.to_thread(_secret_object, state, tenant_of(request), True)


@router.get("/webhooks/events", tags=["webhooks"], summary="This tenant's webhook events (dead letters: status=dead)")
async def list_webhook_events(
    request: Request,
    state: StateDep,
    status: EventStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    records = await asyncio.to_thread(state.webhook_store.list, tenant_of(request), status=status, limit=limit)
    return {"object": "list", "data": [_event_object(r) for r in records]}


@router.post("/webhooks/events/{event_id}/replay", tags=["webhooks"], summary="Send an event again (admin)")
async def replay_webhook_event(event_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    require_admin(request, "replaying a webhook event")
    record = await asyncio.to_thread(state.webhook_store.replay, tenant_of(request), event_id)
    state.wake_webhooks()
    return _event_object(record)
