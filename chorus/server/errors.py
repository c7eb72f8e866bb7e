"""Every error leaves as JSON ``{"error": {"type", "message", "param"}}``, never as a traceback."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chorus.errors import AuthenticationError, ChorusError, QueueFullError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    type: str = Field(description="OpenAI-style error type, e.g. invalid_request_error, not_found_error")
    message: str
    param: str | None = Field(description="the request field at fault, when there is one")
    code: str | None = Field(default=None, description="a machine-readable reason within the type (when set)")


class ErrorResponse(BaseModel):
    """The body of every error response (``error_body``)."""

    error: ErrorDetail


# Documented on every /v1 route. Request validation errors are 400s with this body (never FastAPI's 422 shape):
# declaring 4XX also keeps FastAPI from documenting its own HTTPValidationError.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "the request was refused; error.param names the field at fault"},
    "5XX": {"model": ErrorResponse, "description": "the server could not answer (engine down, timeout, no cloning)"},
}


def error_body(error_type: str, message: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"type": error_type, "message": message, "param": param}
    if code is not None:
        body["code"] = code
    return {"error": body}


def error_response(err: ChorusError, *, retry_after_s: float | None = None) -> JSONResponse:
    """The JSON error; a 429's ``Retry-After`` is ``retry_after_s`` when given (the fleet's), else the error's."""
    headers = {}
    if isinstance(err, QueueFullError):
        wait = err.retry_after_s if retry_after_s is None else retry_after_s
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    if isinstance(err, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(err.error_type, err.message, err.param, err.code)
    return JSONResponse(body, err.status_code, headers=headers)


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "VoiceRef"})


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(error_body("invalid_request_error", "the request body is not valid JSON"), 400)
    if not errors:
        return JSONResponse(error_body("invalid_request_error", "invalid request"), 400)
    # With a union (voice: str | {"id"}), the deepest error is the one about the shape the client sent.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    parts = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(p for p in parts if p not in _UNION_TAGS and "[" not in p) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return JSONResponse(error_body("invalid_request_error", message, param), 400)


def install_error_handlers(app: FastAPI) -> None:
    async def chorus_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, ChorusError):
            raise exc
        state = getattr(request.app.state, "chorus", None)
        fleet = getattr(state, "fleet", None)
        if isinstance(exc, QueueFullError) and fleet is not None:
            return error_response(exc, retry_after_s=fleet.retry_after_s(exc.retry_after_s))
        return error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):
            raise exc
        return _validation_response(exc)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):
            raise exc
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code, headers=exc.headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("server_error", "internal server error"), 500)

    app.add_exception_handler(ChorusError, chorus_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
