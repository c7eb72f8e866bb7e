"""Who is calling: ``Authorization: Bearer KEY`` → the key's tenant, role and concurrency limit.

``auth.mode``: ``off`` (never ask), ``required`` (always), ``auto`` (the default: keyless on a loopback bind,
where every caller is the default tenant, and keys required on any other bind). A server that requires keys
and has none refuses to start (``check_can_start``), so nobody binds 0.0.0.0 open by accident.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import HTTPConnection

from chorus.config import Settings
from chorus.errors import AuthenticationError, ConfigError
from chorus.store.keys import KeyRejected, KeyStore
from chorus.store.tables import KeyRole
from chorus.store.tenants import DEFAULT_TENANT


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str | None  # None: keyless (loopback or auth off)
    role: KeyRole
    max_concurrency: int | None


KEYLESS = Principal(DEFAULT_TENANT, None, "admin", None)
_REJECTED = {
    "malformed": ("the API key is malformed", "invalid_api_key"),
    "unknown": ("the API key is not valid", "invalid_api_key"),
    "revoked": ("the API key was revoked", "revoked_api_key"),
}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def keys_required(settings: Settings) -> bool:
    mode = settings.auth.mode
    return mode == "required" or (mode == "auto" and not is_loopback(settings.server.host))


def check_can_start(settings: Settings, keys: KeyStore) -> None:
    """A server that requires keys needs at least one that is not revoked."""
    if keys_required(settings) and keys.count_active() == 0:
        why = (
            "auth.mode is required"
            if settings.auth.mode == "required"
            else f"host {settings.server.host} is not loopback"
        )
        raise ConfigError(
            f"auth: {why}, so clients need API keys, and none exists; "
            "create one with `chorus keys create --tenant NAME` (or bind 127.0.0.1)"
        )


async def authenticate(request: Request) -> Principal:
    """The route dependency: the caller's principal (also kept on ``request.state.principal``) or 401."""
    principal = await principal_for(request)
    request.state.principal = principal
    return principal


async def principal_for(conn: HTTPConnection, *, query_key: bool = False) -> Principal:
    """The caller of a request or WebSocket: ``Authorization: Bearer KEY``, or (``query_key``, for browsers,
    whose WebSocket API cannot set headers) an ``api_key`` query parameter; AuthenticationError if refused."""
    state = conn.app.state.chorus
    if not state.keys_required:
        return KEYLESS
    scheme, _, key = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        scheme, key = "bearer", (conn.query_params.get("api_key", "") if query_key else "")
    if not key.strip():
        how = "Authorization: Bearer KEY" + (" or ?api_key=KEY" if query_key else "")
        raise AuthenticationError(f"this server requires an API key: send {how}", code="missing_api_key")
    try:
        record = await asyncio.to_thread(state.keys.authenticate, key)
    except KeyRejected as e:
        message, code = _REJECTED[e.reason]
        raise AuthenticationError(message, code=code) from None
    return Principal(record.tenant_id, record.id, record.role, record.max_concurrency)
