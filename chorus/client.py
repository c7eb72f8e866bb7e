"""A small async client for voice agents: ``chorus.client.SpeechSession`` over ``WS /v1/audio/speech/stream``.

    async with SpeechSession.connect("ws://127.0.0.1:8000", voice="joe", timestamps=True) as tts:
        async def speak() -> None:
            async for token in llm_tokens():      # your LLM's stream
                await tts.append(token)
            await tts.flush()                      # end of the answer
        talker = asyncio.create_task(speak())
        async for event in tts.events():
            if event.type == "audio":
                player.write(event.audio)          # s16le PCM at tts.sample_rate (or mp3/opus bytes)
            elif event.type == "response.audio.done":
                break
        await talker

``await tts.cancel()`` is barge-in: the server stops the audio at once and drops the text it holds.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import websockets

STREAM_PATH = "/v1/audio/speech/stream"


@dataclass(frozen=True)
class SessionEvent:
    """One thing the server sent: ``type`` is the event's type, or ``"audio"`` for audio bytes."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    audio: bytes = b""
    received_at: float = 0.0  # the client's monotonic clock (loop.time()) when it arrived

    @property
    def words(self) -> list[dict[str, Any]]:
        return list(self.data.get("words", []))


class SessionError(RuntimeError):
    def __init__(self, data: dict[str, Any]) -> None:
        error = data.get("error", data)
        super().__init__(f"{error.get('code') or error.get('type')}: {error.get('message')}")
        self.data = data


class SpeechSession:
    def __init__(self, connection: Any, created: dict[str, Any]) -> None:
        self._ws = connection
        self.session: dict[str, Any] = created.get("session", {})
        self._cancels = 0  # cancels sent and not yet acknowledged (response.cancelled)

    @classmethod
    def connect(cls, url: str, *, api_key: str | None = None, **settings: Any) -> _Connect:
        """``url``: the server (``ws://host:port`` or ``http://host:port``; the path is added). ``settings``:
        any ``session.update`` field (voice, response_format, speed, sample_rate, timestamps, audio_encoding, …)."""
        return _Connect(url, api_key, settings)

    @property
    def sample_rate(self) -> int:
        return int(self.session.get("sample_rate", 24_000))

    async def update(self, **settings: Any) -> None:
        await self._send({"type": "session.update", "session": settings})

    async def append(self, text: str) -> None:
        await self._send({"type": "input_text.append", "text": text})

    async def flush(self) -> None:
        await self._send({"type": "input_text.flush"})

    async def cancel(self) -> None:
        """Barge-in. Audio still arriving from before the cancel is not yielded by :meth:`events` (it runs up to
        the server's ``response.cancelled``)."""
        self._cancels += 1
        await self._send({"type": "response.cancel"})

    async def close(self) -> None:
        """Ask the server to finish what it holds and close; then close the socket."""
        try:
            await self._send({"type": "session.close"})
            async for _ in self.events():
                pass
        except websockets.ConnectionClosed:
            pass
        finally:
            await self._ws.close()

    async def events(self, *, raise_errors: bool = False) -> AsyncIterator[SessionEvent]:
        """Everything the server sends, in order, until it closes the session."""
        loop = asyncio.get_running_loop()
        try:
            async for message in self._ws:
                now = loop.time()
                if isinstance(message, bytes):
                    if not self._cancels:
                        yield SessionEvent("audio", audio=message, received_at=now)
                    continue
                data = json.loads(message)
                kind = str(data.get("type"))
                if kind == "response.audio.delta":
                    if not self._cancels:
                        yield SessionEvent("audio", data, base64.b64decode(data.get("audio", "")), now)
                    continue
                if kind == "response.cancelled":
                    self._cancels = max(0, self._cancels - 1)
                if kind == "error" and raise_errors:
                    raise SessionError(data)
                yield SessionEvent(kind, data, received_at=now)
        except websockets.ConnectionClosedOK:
            return

    @property
    def close_reason(self) -> str | None:
        rcvd = getattr(self._ws, "close_rcvd", None)
        return None if rcvd is None else str(rcvd.reason)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))


class _Connect:
    def __init__(self, url: str, api_key: str | None, settings: dict[str, Any]) -> None:
        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.url = base if base.endswith(STREAM_PATH) else base + STREAM_PATH
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.settings = settings
        self.session: SpeechSession | None = None

    async def __aenter__(self) -> SpeechSession:
        ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=None, open_timeout=30)
        try:
            created = json.loads(await ws.recv())
            if created.get("type") != "session.created":
                raise SessionError(created)
            session = SpeechSession(ws, created)
            if self.settings:
                await session.update(**self.settings)
                updated = json.loads(await ws.recv())
                if updated.get("type") != "session.updated":
                    raise SessionError(updated)
                session.session = updated.get("session", {})
        except BaseException:
            await ws.close()
            raise
        self.session = session
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.session is not None:
            await self.session._ws.close()
