"""Refuse oversized uploads from their Content-Length, before the multipart body is read and spooled.

A pure ASGI middleware (not BaseHTTPMiddleware, which would get between the streaming routes and the client's
disconnect). Uploads sent without a length are still bounded: the route stops reading at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from chorus.server.errors import error_body

# Room for the form's other fields and multipart boundaries around the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024


class UploadLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: Iterable[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes + FORM_OVERHEAD_BYTES:
                message = f"the upload is {int(length) / 2**20:.1f} MiB; at most {self.max_bytes / 2**20:.1f} MiB"
                body = json.dumps(error_body("invalid_request_error", message, "audio_sample", "too_large")).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
