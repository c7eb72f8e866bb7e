"""Spoken consent (OpenAI-shaped): ``/v1/audio/voice_consents`` and its challenges (``chorus.consent``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from chorus.consent.service import ConsentRefusedError, consent_object
from chorus.server.deps import StateDep, tenant_of
from chorus.server.routes.voices import audit_event, read_upload

router = APIRouter(prefix="/v1/audio", tags=["consent"])
UPLOAD_PATHS = frozenset({"/v1/audio/voice_consents"})


@router.post("/voice_consents/challenges", status_code=201, summary="A phrase for the speaker to record")
async def create_challenge(request: Request, state: StateDep) -> JSONResponse:
    challenge = await asyncio.to_thread(state.consents.challenge, tenant_of(request))
    body = {
        "id": challenge.id,
        "object": "audio.voice_consent.challenge",
        "phrase": challenge.phrase,
        "created_at": int(challenge.created_at.timestamp()),
        "expires_at": int(challenge.expires_at.timestamp()),
    }
    return JSONResponse(body, status_code=201)


@router.post("/voice_consents", status_code=201, summary="Record a speaker's consent: the challenge phrase, spoken")
async def create_consent(
    request: Request,
    state: StateDep,
    name: Annotated[str, Form(max_length=200, description="who consents (for your records)")],
    recording: Annotated[UploadFile, File(description="the speaker reading the challenge phrase")],
    challenge_id: Annotated[str, Form(max_length=64)],
    language: Annotated[str | None, Form(max_length=32)] = None,
) -> JSONResponse:
    data = await read_upload(state, recording, "recording")
    try:
        record = await asyncio.to_thread(
            state.consents.record,
            tenant_of(request),
            name=name,
            language=language,
            challenge_id=challenge_id,
            recording=data,
        )
    except ConsentRefusedError as e:
        audit_event(state, request, "consent.refused", challenge_id, {"code": e.code})
        raise
    detail: dict[str, object] = {
        "name": record.name,
        "challenge_id": record.challenge_id,
        "recording_sha256": record.recording_sha256,
    }
    audit_event(state, request, "consent.create", record.id, detail)
    return JSONResponse(
        consent_object(record), status_code=201, headers={"Location": f"/v1/audio/voice_consents/{record.id}"}
    )


@router.get("/voice_consents", summary="The tenant's consents")
async def list_consents(request: Request, state: StateDep) -> dict[str, object]:
    records = await asyncio.to_thread(state.consents.store.list, tenant_of(request))
    return {"object": "list", "data": [consent_object(r) for r in records]}


@router.get("/voice_consents/{consent_id}", summary="One consent")
async def get_consent(consent_id: str, request: Request, state: StateDep) -> dict[str, object]:
    return consent_object(await asyncio.to_thread(state.consents.store.get, tenant_of(request), consent_id))


@router.delete("/voice_consents/{consent_id}", summary="Delete a consent and its recording")
async def delete_consent(consent_id: str, request: Request, state: StateDep) -> dict[str, object]:
    record = await asyncio.to_thread(state.consents.store.delete, tenant_of(request), consent_id)
    audit_event(state, request, "consent.delete", record.id, {"recording_sha256": record.recording_sha256})
    return {"id": consent_id, "object": "audio.voice_consent.deleted", "deleted": True}
