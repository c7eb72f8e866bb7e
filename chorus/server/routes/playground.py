"""The web playground: one static page at ``/`` and ``/playground`` (``chorus/server/playground/``), plus two
small JSON helpers it reads.

The page and its assets are public (they hold no data); everything the page shows comes from the API with the
visitor's key, which the page keeps in the tab's session storage. The assets are a fixed list read from the
package at import: a request names one of them, never a path. Every page response carries a strict
Content-Security-Policy: scripts, styles and connections from this origin only, audio from ``blob:`` URLs (the
page's own recordings and results), no inline code, no frames, no plugins.
"""

from __future__ import annotations

import asyncio
import functools
import json
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import select

from chorus import __version__
from chorus.errors import NotFoundError
from chorus.server.auth import Principal, authenticate
from chorus.server.deps import ServerState, StateDep
from chorus.server.errors import ERROR_RESPONSES
from chorus.store.tables import AuditRow

router = APIRouter(tags=["playground"])

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        # The page builds its DOM with textContent/createElement only: no HTML from strings, ever.
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    # Small files that change with the package: always revalidated, never stale after an upgrade.
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
RECENT_LIMIT = 20


@functools.cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset by file name → (bytes, media type); read once, at the first request (~70 kB)."""
    folder = resources.files("chorus.server.playground")
    assets = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in MEDIA_TYPES:
            assets[item.name] = (item.read_bytes(), MEDIA_TYPES[suffix])
    return assets


def _asset(name: str) -> Response:
    found = assets().get(name)
    if found is None:
        raise NotFoundError(f"no playground asset {name!r}", param="name")
    body, media_type = found
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/", include_in_schema=False)
async def page_root() -> Response:
    return _asset("index.html")


@router.get("/playground", include_in_schema=False)
async def page() -> Response:
    return _asset("index.html")


@router.get("/playground/assets/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    return _asset(name)


@router.get(
    "/playground/config.json",
    summary="What the playground page needs to know before it has a key",
    responses=ERROR_RESPONSES,
)
async def config(state: StateDep) -> dict[str, object]:
    settings = state.settings
    return {
        "version": __version__,
        "model": state.model_id,
        "backend": state.engine.backend.name,
        "keys_required": state.keys_required,
        "sample_rate": settings.server.output_sample_rate,
        "max_input_chars": settings.server.max_input_chars,
        "require_consent": settings.safety.require_consent,
        "challenge_ttl_s": settings.safety.challenge_ttl_s,
    }


def recent_syntheses(state: ServerState, tenant_id: str, limit: int) -> list[dict[str, object]]:
    """The tenant's newest synthesis rows of the audit trail (index: tenant, seq), newest first: what the audit
    writer has stored so far (rows are written by its thread, a moment after each response ends)."""
    query = (
        select(AuditRow)
        .where(AuditRow.tenant_id == tenant_id, AuditRow.kind == "synthesis")
        .order_by(AuditRow.seq.desc())
        .limit(limit)
    )
    with state.audit.audit.sql.session() as session:
        rows = list(session.scalars(query))
    recent = []
    for row in rows:
        detail = json.loads(row.detail)
        recent.append(
            {
                "at": row.at,
                "request_id": detail.get("request_id"),
                "voice": row.subject,
                "format": detail.get("format"),
                "text_chars": detail.get("text_chars"),
                "audio_seconds": detail.get("audio_seconds"),
                "first_byte_s": detail.get("first_byte_s"),
                "total_s": detail.get("total_s"),
                "outcome": detail.get("outcome"),
            }
        )
    return recent


@router.get(
    "/v1/playground/recent",
    summary="The caller's tenant's most recent speech requests (from the audit trail), newest first",
    responses=ERROR_RESPONSES,
)
async def recent(
    state: StateDep,
    principal: Annotated[Principal, Depends(authenticate)],
    limit: Annotated[int, Query(ge=1, le=100)] = RECENT_LIMIT,
) -> dict[str, object]:
    rows = await asyncio.to_thread(recent_syntheses, state, principal.tenant_id, limit)
    return {"object": "list", "data": rows}
