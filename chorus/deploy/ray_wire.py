"""What travels between chorus's Ray Serve ingress and its engine replicas (pickled by Ray's deployment handles).

Errors travel as :class:`WireError`, not as exceptions: Ray would wrap a raised ``ChorusError`` in its own error
type, and several chorus errors cannot be unpickled (their ``__init__`` takes keyword-only arguments).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

from chorus.errors import ChorusError
from chorus.models.base import VoiceInfo
from chorus.speech import SpeechOrder

# Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the message, and are not forwarded.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"})
REPLICA_HEADER = b"x-chorus-replica"

Headers = tuple[tuple[bytes, bytes], ...]


def end_to_end(headers: Any) -> Headers:
    """``headers`` (ASGI pairs) without the hop-by-hop ones."""
    return tuple((bytes(k).lower(), bytes(v)) for k, v in headers if bytes(k).lower() not in HOP_BY_HOP)


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """One HTTP request as the ingress received it, for the chorus app an engine replica runs."""

    method: str
    path: str
    query_string: bytes
    headers: Headers
    body: bytes
    client: tuple[str, int] | None = None

    def scope(self) -> dict[str, Any]:
        """The ASGI scope of the request (the body is whole now: its length is known)."""
        headers = [(k, v) for k, v in self.headers if k != b"content-length"]
        headers.append((b"content-length", str(len(self.body)).encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": self.query_string,
            "headers": headers,
            "client": self.client,
            "server": None,
        }


@dataclass(frozen=True, slots=True)
class ResponseStart:
    """The first item of a forwarded response: its status and headers (the body's chunks follow as bytes)."""

    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class WireError:
    """A ``ChorusError`` raised on the other side, rebuilt here as the same class with the same fields."""

    module: str
    qualname: str
    message: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, err: ChorusError) -> WireError:
        kind = type(err)
        return cls(kind.__module__, kind.__qualname__, err.message, dict(vars(err)))

    def rebuild(self) -> ChorusError:
        kind: Any = ChorusError
        try:
            found = getattr(importlib.import_module(self.module), self.qualname)
            if isinstance(found, type) and issubclass(found, ChorusError):
                kind = found
        except (ImportError, AttributeError):
            pass
        err: ChorusError = kind.__new__(kind)
        Exception.__init__(err, self.message)
        vars(err).update(self.attrs)
        return err


@dataclass(frozen=True, slots=True)
class WireOrder:
    """A speech order for another process: ``plays_at`` (a monotonic time, which is per machine) goes as a delay."""

    order: SpeechOrder
    plays_in_s: float | None = None

    @classmethod
    def of(cls, order: SpeechOrder) -> WireOrder:
        delay = None if order.plays_at is None else max(0.0, order.plays_at - time.monotonic())
        return cls(replace(order, plays_at=None), delay)

    def local(self) -> SpeechOrder:
        if self.plays_in_s is None:
            return self.order
        return replace(self.order, plays_at=time.monotonic() + self.plays_in_s)


@dataclass(frozen=True, slots=True)
class SegmentOpened:
    """The first item of a segment's stream: the request was queued on the replica (outputs follow)."""

    request_id: str
    voice_id: str
    replica_id: str
    watermark: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the ingress needs to know of the engines (the same on every replica of one config)."""

    backend: str
    sample_rate: int
    overlap: int  # crossfade samples at a seam
    builtin_voices: tuple[VoiceInfo, ...]
