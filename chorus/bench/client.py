"""One request against one system: send, read the audio as it arrives, note when each piece came.

The client does as little as possible per chunk (a clock read and an append) because the load generator shares
the machine's few cores with the server it measures; all arithmetic on the arrivals happens after the run.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

import httpx

from chorus.bench.servers import Server

# OpenAI's ``pcm``: signed 16-bit little-endian mono at 24 kHz.
PCM_BYTES_PER_SECOND = 24_000 * 2
# Bytes of an error body kept for the report; the rest is drained and dropped.
ERROR_BODY_CHARS = 200


@dataclass
class StreamResult:
    """What one request saw. Times are seconds since it was sent; ``arrivals`` holds (time, audio seconds so far)."""

    index: int
    sent_at: float  # perf_counter when sent, to place the request on the run's timeline
    status: int | None = None
    error: str | None = None
    ttfa_s: float | None = None
    # chorus, when the request had to wait for a slot: its predicted first-audio time (X-Queue-ETA-S).
    eta_s: float | None = None
    end_s: float | None = None
    audio_s: float = 0.0
    arrivals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttfa_s is not None

    def arrived(self, audio_s: float) -> None:
        """Audio came in: ``audio_s`` seconds of it so far."""
        now = time.perf_counter() - self.sent_at
        if self.ttfa_s is None:
            self.ttfa_s = now
        self.arrivals.append((now, audio_s))

    def ended(self, audio_s: float) -> StreamResult:
        """The request is over, with ``audio_s`` seconds of audio received (a 200 without any is an error)."""
        self.end_s = time.perf_counter() - self.sent_at
        self.audio_s = audio_s
        if self.error is None and self.ttfa_s is None:
            self.error = "empty audio"
        return self


class PcmCounter:
    """Raw PCM: every byte is audio."""

    bytes_per_second = float(PCM_BYTES_PER_SECOND)

    def feed(self, chunk: bytes) -> int:
        return len(chunk)


class WavCounter:
    """A WAV body: audio starts after the header, whose length and format are only known once it is parsed."""

    def __init__(self) -> None:
        self._head = b""
        self._in_data = False
        self.bytes_per_second = 0.0

    def feed(self, chunk: bytes) -> int:
        if self._in_data:
            return len(chunk)
        self._head += chunk
        offset = self._data_offset()
        if offset is None:
            return 0
        self._in_data = True
        audio = len(self._head) - offset
        self._head = b""
        return audio

    def _data_offset(self) -> int | None:
        """Offset of the first audio byte, or None while the header is incomplete; raises on a non-WAV body."""
        head = self._head
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError("response is not a WAV file")
        pos = 12
        while pos + 8 <= len(head):
            chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if chunk_id == b"fmt ":
                if pos + 8 + 16 > len(head):
                    return None
                channels, rate, _, _, bits = struct.unpack_from("<HIIHH", head, pos + 10)
                self.bytes_per_second = float(channels * rate * bits // 8)
            elif chunk_id == b"data":
                if not self.bytes_per_second:
                    raise ValueError("WAV data chunk before its fmt chunk")
                return pos + 8
            pos += 8 + size + (size & 1)  # chunks are padded to an even length
        return None


def _request(server: Server, text: str) -> tuple[str, dict[str, object], PcmCounter | WavCounter]:
    if server.kind == "piper":
        return "/synthesize", {"text": text}, WavCounter()
    body: dict[str, object] = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
    return "/v1/audio/speech", body, PcmCounter()


async def speak(client: httpx.AsyncClient, server: Server, text: str, index: int, timeout_s: float) -> StreamResult:
    """Send one request and read it to the end (or to ``timeout_s``); never raises for HTTP or network trouble."""
    path, body, counter = _request(server, text)
    sent = time.perf_counter()
    result = StreamResult(index=index, sent_at=sent)
    received = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", server.base_url + path, json=body) as response:
                result.status = response.status_code
                eta = response.headers.get("x-queue-eta-s")
                result.eta_s = float(eta) if eta is not None else None
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:ERROR_BODY_CHARS]
                    result.error = f"HTTP {response.status_code}: {detail}"
                    result.end_s = time.perf_counter() - sent  # how long a refusal took
                    return result
                async for chunk in response.aiter_raw():
                    audio = counter.feed(chunk)
                    if audio:
                        received += audio
                        result.arrived(received / counter.bytes_per_second)
    except TimeoutError:
        result.error = f"timeout after {timeout_s:.0f} s"
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"[:ERROR_BODY_CHARS]
    except ValueError as e:  # a body that is not the audio we asked for
        result.error = f"bad body: {e}"
    return result.ended(received / counter.bytes_per_second if counter.bytes_per_second else 0.0)


def make_client(max_connections: int, timeout_s: float) -> httpx.AsyncClient:
    """One pooled client per measurement; ``trust_env=False`` keeps proxies out of a loopback benchmark."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)
