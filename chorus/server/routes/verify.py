"""``POST /v1/audio/verify``: does this audio carry this server's watermark, and whose payload?"""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile

from chorus.audio.decode import decode_audio
from chorus.server.deps import StateDep, tenant_of
from chorus.server.routes.voices import read_upload
from chorus.voices.preprocess import InvalidReferenceError
from chorus.watermark.marking import tenant_payload

router = APIRouter(prefix="/v1/audio", tags=["watermark"])
UPLOAD_PATHS = frozenset({"/v1/audio/verify"})
MAX_VERIFY_S = 600.0  # detection reads the whole clip: ten minutes is plenty to find a mark in


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    try:
        audio, rate = decode_audio(data)
    except ValueError as e:
        raise InvalidReferenceError("not_audio", f"the audio could not be decoded: {e}") from e
    if audio.size > MAX_VERIFY_S * rate:
        raise InvalidReferenceError("too_long", f"the audio is {audio.size / rate:.0f} s; at most {MAX_VERIFY_S:g} s")
    return audio, rate


@router.post("/verify", summary="Detect chorus's watermark in an audio file (any format chorus reads)")
async def verify(
    request: Request, state: StateDep, audio: Annotated[UploadFile, File(description="the audio to check")]
) -> dict[str, object]:
    data = await read_upload(state, audio, "audio")
    samples, rate = await asyncio.to_thread(_decode, data)
    found = await asyncio.to_thread(state.marking.detect, samples, rate)
    payload = found.payload if found.watermarked else None
    return {
        "object": "audio.watermark_verification",
        "watermarked": found.watermarked,
        "score": round(found.score, 3),
        "threshold": round(found.threshold, 3),
        # 16 bits of the tenant id the clip was made for; None when the clip is too short or damaged to read it
        # (presence is decided without it).
        "payload": payload,
        "tenant_match": None if payload is None else payload == tenant_payload(tenant_of(request)),
        "key_id": state.marking.key_id,
        "duration_s": round(samples.size / rate, 3),
    }
