"""Voice routes: OpenAI-style ``/v1/audio/voices`` and vTTS-style ``/v1/voices/register``.

Built-in voices (the backend's) and cloned voices (registered here, stored per tenant) share one namespace:
``voice`` in the speech routes takes either. Registration takes an upload, never a server-side path.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile as StarletteUpload

from chorus.errors import InvalidRequestError
from chorus.models.base import VoiceInfo
from chorus.server.deps import ServerState, StateDep, principal_of, tenant_of
from chorus.store.tables import VoiceRecord
from chorus.voices.preprocess import InvalidReferenceError

router = APIRouter(prefix="/v1", tags=["voices"])
UPLOAD_READ_BYTES = 1 << 16
UPLOAD_PATHS = frozenset({"/v1/audio/voices", "/v1/voices/register"})
# vTTS clients name the upload and the transcript in several ways; the first one present wins.
VTTS_AUDIO_FIELDS = ("audio", "file", "audio_sample", "reference_audio", "ref_audio")
VTTS_TEXT_FIELDS = ("ref_text", "text", "transcript", "reference_text")
VTTS_CONSENT_FIELDS = ("consent", "consent_id")


def cloned_voice_object(record: VoiceRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "object": "audio.voice",
        "type": "cloned",
        "name": record.name,
        "language": record.language,
        "ref_text": record.ref_text,
        "duration_s": round(record.duration_s, 3),
        "sample_rate": record.sample_rate,
        "created_at": int(record.created_at.timestamp()),
        "consent_status": record.consent_status,
        "consent_id": record.consent_id,
    }


def builtin_voice_object(voice: VoiceInfo) -> dict[str, object]:
    return {
        "id": voice.voice_id,
        "object": "audio.voice",
        "type": "builtin",
        "name": voice.name,
        "language": voice.language,
        "description": voice.description,
    }


async def read_upload(state: ServerState, upload: StarletteUpload, param: str) -> bytes:
    """The whole upload, refused (413) as soon as it passes the size limit rather than after reading it all."""
    limit = state.voice_service.limits.max_bytes
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(UPLOAD_READ_BYTES):
        size += len(chunk)
        if size > limit:
            raise InvalidReferenceError("too_large", f"the {param} upload is over the {limit / 2**20:.1f} MiB limit")
        parts.append(chunk)
    if size == 0:
        raise InvalidReferenceError("not_audio", f"the {param} upload is empty")
    return b"".join(parts)


async def register(
    state: ServerState,
    request: Request,
    *,
    name: str,
    data: bytes,
    ref_text: str | None,
    language: str | None,
    consent: str | None,
) -> VoiceRecord:
    record = await asyncio.to_thread(
        state.voice_service.register,
        tenant_of(request),
        name=name,
        audio=data,
        ref_text=ref_text,
        language=language,
        consent=consent,
    )
    detail = {
        "name": record.name,
        "reference_sha256": record.original_sha256,
        "duration_s": record.duration_s,
        "consent_id": record.consent_id,
    }
    audit_event(state, request, "voice.create", record.id, detail)
    return record


async def delete(state: ServerState, request: Request, voice_id: str) -> None:
    await asyncio.to_thread(state.voice_service.delete, tenant_of(request), voice_id)
    audit_event(state, request, "voice.delete", voice_id, {})


def audit_event(state: ServerState, request: Request, kind: str, subject: str, detail: dict[str, object]) -> None:
    principal = principal_of(request)
    state.audit.record(kind, tenant_id=principal.tenant_id, key_id=principal.key_id, subject=subject, detail=detail)


@router.post("/audio/voices", status_code=201, summary="Register a cloned voice from reference audio")
async def create_voice(
    request: Request,
    state: StateDep,
    name: Annotated[str, Form(max_length=200)],
    audio_sample: Annotated[UploadFile, File(description="3-30 s of the speaker: wav, flac, mp3, ogg or m4a")],
    ref_text: Annotated[str | None, Form(description="exact transcript of the sample (better cloning)")] = None,
    language: Annotated[str | None, Form(max_length=32)] = None,
    consent: Annotated[
        str | None, Form(max_length=64, description="the speaker's consent id (POST /v1/audio/voice_consents)")
    ] = None,
) -> JSONResponse:
    data = await read_upload(state, audio_sample, "audio_sample")
    record = await register(state, request, name=name, data=data, ref_text=ref_text, language=language, consent=consent)
    return JSONResponse(
        cloned_voice_object(record), status_code=201, headers={"Location": f"/v1/audio/voices/{record.id}"}
    )


@router.get("/audio/voices", summary="Built-in and cloned voices")
async def list_voices(request: Request, state: StateDep) -> dict[str, object]:
    records = await asyncio.to_thread(state.voice_service.list, tenant_of(request))
    data = [builtin_voice_object(v) for v in state.voices.list()] + [cloned_voice_object(r) for r in records]
    return {"object": "list", "data": data}


@router.get("/audio/voices/{voice_id}", summary="One voice")
async def get_voice(voice_id: str, request: Request, state: StateDep) -> dict[str, object]:
    builtin = state.voice_service.builtin(voice_id)
    if builtin is not None:
        return builtin_voice_object(builtin)
    record = await asyncio.to_thread(state.voice_service.get, tenant_of(request), voice_id)
    return cloned_voice_object(record)


@router.delete("/audio/voices/{voice_id}", summary="Delete a cloned voice and its stored audio")
async def delete_voice(voice_id: str, request: Request, state: StateDep) -> dict[str, object]:
    await delete(state, request, voice_id)
    return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


# -- vTTS-compatible -------------------------------------------------------------------------------


@router.post("/voices/register", status_code=201, summary="Register a cloned voice (vTTS-compatible upload)")
async def vtts_register(request: Request, state: StateDep) -> JSONResponse:
    """Multipart form: ``name``, the audio upload (``audio``/``file``/``audio_sample``), optional ``ref_text``
    (or ``text``) and ``language``. A path to a file on the server is refused: uploads only."""
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=64 * 1024)
    except Exception as e:  # starlette raises its own MultiPartException / HTTPException for malformed forms
        raise InvalidRequestError(f"expected a multipart form with the audio upload: {e}") from e
    try:
        name = form.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequestError("name: Field required", param="name")
        upload = next((form[f] for f in VTTS_AUDIO_FIELDS if f in form), None)
        if upload is None:
            raise InvalidRequestError(f"an audio upload is required ({', '.join(VTTS_AUDIO_FIELDS)})", param="audio")
        if isinstance(upload, str):
            raise InvalidRequestError(
                "the audio must be uploaded as a file; server-side paths are not accepted", param="audio"
            )
        data = await read_upload(state, upload, "audio")
        texts = [form[f] for f in VTTS_TEXT_FIELDS if f in form]
        ref_text = texts[0] if texts and isinstance(texts[0], str) else None
        language = form.get("language")
        consent = next((form[f] for f in VTTS_CONSENT_FIELDS if f in form), None)
    finally:
        await form.close()
    record = await register(
        state,
        request,
        name=name,
        data=data,
        ref_text=ref_text,
        language=language if isinstance(language, str) else None,
        consent=consent if isinstance(consent, str) else None,
    )
    body = {"voice_id": record.id, "status": "registered", **cloned_voice_object(record)}
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/audio/voices/{record.id}"})


@router.delete("/voices/{voice_id}", summary="Delete a cloned voice (vTTS-compatible)")
async def vtts_delete(voice_id: str, request: Request, state: StateDep) -> dict[str, object]:
    await delete(state, request, voice_id)
    return {"voice_id": voice_id, "deleted": True}
