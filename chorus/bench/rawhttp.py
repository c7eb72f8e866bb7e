"""A lean HTTP/1.1 caller for floods: hundreds of requests from one process, on the machine under test.

``httpx`` spends milliseconds of CPU per request in Python; 500 callers sharing two cores with the server put
seconds of the client's own work into every figure (a 500-caller flood's 429s measured 7 s at the client while the
server's access log showed them answered within 0.5 s). This caller does the least a client can: one connection
per request (``Connection: close``), the request written in one piece, the status line and headers parsed, and a
chunked body counted as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

from chorus.bench.client import ERROR_BODY_CHARS, PCM_BYTES_PER_SECOND, StreamResult


def speech_request(base_url: str, text: str) -> tuple[str, int, bytes]:
    """(host, port, request bytes) of an OpenAI speech request for ``text`` as raw PCM."""
    url = urlsplit(base_url)
    if url.scheme != "http" or url.hostname is None or url.port is None:
        raise ValueError(f"need http://host:port, not {base_url!r}")
    body = json.dumps({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}).encode()
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return url.hostname, url.port, head.encode() + body


async def _headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def raw_speak(
    host: str, port: int, request: bytes, index: int, timeout_s: float
) -> tuple[StreamResult, str | None]:
    """Send one request and read it to the end (or to ``timeout_s``); never raises for HTTP or network trouble.
    Returns what ``chorus.bench.client.speak`` would, and the response's Retry-After."""
    sent = time.perf_counter()
    result = StreamResult(index=index, sent_at=sent)
    retry_after: str | None = None
    received = 0
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            result.status, headers = await _headers(reader)
            retry_after = headers.get("retry-after")
            eta = headers.get("x-queue-eta-s")
            result.eta_s = float(eta) if eta is not None else None
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            if result.status != 200:
                detail = await reader.read()
                result.error = f"HTTP {result.status}: {detail.decode(errors='replace')[:ERROR_BODY_CHARS]}"
                result.end_s = time.perf_counter() - sent
                return result, retry_after
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    audio = size
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                    audio = len(data)
                received += audio
                result.arrived(received / PCM_BYTES_PER_SECOND)
    except TimeoutError:
        result.error = f"timeout after {timeout_s:.0f} s"
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        result.error = f"{type(e).__name__}: {e}"[:ERROR_BODY_CHARS]
    finally:
        if writer is not None:
            writer.close()
    return result.ended(received / PCM_BYTES_PER_SECOND), retry_after
