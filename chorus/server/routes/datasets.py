"""Training datasets (``/v1/datasets``): upload an archive of clips with a consent, get a validation report.

``POST /v1/datasets`` (multipart): ``name``, ``consent`` (a consent id of the caller's tenant, recorded by the
dataset's speaker: ``/v1/audio/voice_consents``), ``archive`` (a .zip or .tar.gz with the audio files and a
``metadata.csv`` whose header row is ``file_name,text``) and optionally ``language`` (default ``en``; transcripts
are checked by the offline recogniser for English only). Answers 201 with the dataset and its report, or:

- 400 ``invalid_request_error`` naming the archive's problem (``error.code``: not_an_archive, corrupt_archive,
  no_metadata, ambiguous_metadata, bad_metadata, unsafe_path, unsafe_member, encrypted, duplicate_member,
  too_many_files, too_many_clips); 413 ``too_large`` (the upload, or its files uncompressed, over
  ``finetune.max_dataset_bytes``);
- 404 when ``consent`` names no consent of the tenant; 403 ``consent_required`` without one;
- 422 ``too_little_speech`` / ``no_usable_clips``: under ``finetune.min_dataset_minutes`` of speech in the clips
  kept; ``error.report`` is the validation report, so the excluded clips can be fixed;
- 403 ``speaker_mismatch`` (the clips checked are not the consenting speaker) or ``mixed_speakers`` (some are
  not, or differ from the rest): ``error.clips`` names each clip at fault with its similarities;
- 429 ``datasets_busy`` + Retry-After while the server validates as many datasets as it will at once.

A refused dataset stores nothing. The report is described in ``chorus.finetune.dataset_report``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from chorus.finetune.dataset_service import DatasetRefusedError
from chorus.finetune.dataset_speakers import DatasetSpeakerError
from chorus.server.deps import ServerState, StateDep, tenant_of
from chorus.server.errors import error_body
from chorus.server.routes.voices import audit_event
from chorus.store.datasets import DatasetRecord
from chorus.store.fine_tunes import FineTuneConflictError

router = APIRouter(prefix="/v1", tags=["datasets"])
UPLOAD_PATHS = frozenset({"/v1/datasets"})


def dataset_object(record: DatasetRecord, report: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "object": "dataset",
        "name": record.name,
        "consent_id": record.consent_id,
        "language": record.language,
        "created_at": int(record.created_at.timestamp()),
        "archive_bytes": record.archive_bytes,
        "archive_sha256": record.archive_sha256,
        "clips": record.num_clips,
        "kept": record.num_kept,
        "speech_minutes": round(record.speech_s / 60.0, 3),
    }
    if report is not None:
        body["report"] = report
    return body


def _refusal(
    state: ServerState, request: Request, error: DatasetSpeakerError | DatasetRefusedError, consent: str | None
) -> JSONResponse:
    """The error body, with what a client needs to fix the dataset: the clips at fault, or the report."""
    body = error_body(error.error_type, error.message, error.param, error.code)
    detail: dict[str, Any] = body["error"]  # type: ignore[assignment]
    if isinstance(error, DatasetSpeakerError):
        detail["clips"] = [c.to_json() for c in error.clips]
        if error.clips:  # a refusal on the speaker's evidence is a safety event
            audit_event(
                state, request, "dataset.refused", consent or "", {"code": error.code, "clips": len(error.clips)}
            )
    else:
        detail["report"] = error.report
    return JSONResponse(body, status_code=error.status_code)


@router.post(
    "/datasets",
    status_code=201,
    summary="Upload a training dataset (archive of clips + metadata.csv) with its speaker's consent",
)
async def create_dataset(
    request: Request,
    state: StateDep,
    name: Annotated[str, Form(max_length=200)],
    archive: Annotated[UploadFile, File(description=".zip or .tar.gz: audio files and metadata.csv (file_name,text)")],
    consent: Annotated[
        str | None, Form(max_length=64, description="the speaker's consent id (POST /v1/audio/voice_consents)")
    ] = None,
    language: Annotated[str | None, Form(max_length=32, description="the clips' language (default en)")] = None,
) -> JSONResponse:
    try:
        # The upload is spooled to disk by the form parser; the service reads it once, off the event loop.
        record, report = await asyncio.to_thread(
            state.datasets.create,
            tenant_of(request),
            name=name,
            consent_id=consent,
            archive=archive.file,
            language=language,
        )
    except (DatasetSpeakerError, DatasetRefusedError) as e:
        return _refusal(state, request, e, consent)
    finally:
        await archive.close()
    detail: dict[str, object] = {
        "name": record.name,
        "consent_id": record.consent_id,
        "archive_sha256": record.archive_sha256,
        "clips": record.num_clips,
        "kept": record.num_kept,
        "speech_minutes": round(record.speech_s / 60.0, 3),
    }
    audit_event(state, request, "dataset.create", record.id, detail)
    return JSONResponse(
        dataset_object(record, report), status_code=201, headers={"Location": f"/v1/datasets/{record.id}"}
    )


@router.get("/datasets", summary="The tenant's datasets, newest first (without their reports)")
async def list_datasets(
    request: Request,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=40, description="a dataset id: the page after it")] = None,
) -> dict[str, Any]:
    records = await asyncio.to_thread(state.datasets.list, tenant_of(request), limit=limit, before=before)
    return {"object": "list", "data": [dataset_object(r, None) for r in records], "has_more": len(records) == limit}


@router.get("/datasets/{dataset_id}", summary="A dataset and its validation report")
async def get_dataset(dataset_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        record = state.datasets.get(tenant_of(request), dataset_id)
        return dataset_object(record, state.datasets.report(record))

    return await asyncio.to_thread(read)


@router.delete("/datasets/{dataset_id}", summary="Delete a dataset and its stored archive")
async def delete_dataset(dataset_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    tenant = tenant_of(request)
    if state.fine_tunes is not None and await asyncio.to_thread(
        state.fine_tunes.store.uses_dataset, tenant, dataset_id
    ):
        raise FineTuneConflictError(
            f"dataset {dataset_id!r} is being trained on: cancel its fine-tune first", code="dataset_in_use"
        )
    record = await asyncio.to_thread(state.datasets.delete, tenant, dataset_id)
    audit_event(state, request, "dataset.delete", record.id, {"archive_sha256": record.archive_sha256})
    return {"id": dataset_id, "object": "dataset.deleted", "deleted": True}
