"""Refuse oversized uploads before they are read whole: by Content-Length up front, and by counting the body of
an upload sent without one (chunked), which is cut off at the limit instead of being spooled to disk entire.

A pure ASGI middleware (not BaseHTTPMiddleware, which would get between the streaming routes and the client's
disconnect).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorus.server.errors import error_body

# Room for the form's other fields and multipart boundaries around the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024


class UploadLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: Iterable[str], param: str = "audio_sample") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.param = param  # the upload's form field, named in the 413
        self.limit = max_bytes + FORM_OVERHEAD_BYTES
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send, int(length))
            return
        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(send, None)
                    return {"type": "http.disconnect"}  # the app stops reading, as if the client had left
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # once refused, the 413 is the response
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _refuse(self, send: Send, length: int | None) -> None:
        limit = f"{self.max_bytes / 2**20:.1f} MiB"
        message = (
            f"the upload is {length / 2**20:.1f} MiB; at most {limit}"
            if length is not None
            else f"the upload is over the {limit} limit"
        )
        body = json.dumps(error_body("invalid_request_error", message, self.param, "too_large")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
