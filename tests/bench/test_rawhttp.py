"""The flood's lean HTTP caller against tiny loopback servers that answer as chorus does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from chorus.bench.client import PCM_BYTES_PER_SECOND, StreamResult
from chorus.bench.rawhttp import raw_speak, speech_request

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def _call(answer: Answer, timeout_s: float = 5.0) -> tuple[StreamResult, str | None, bytes]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        await answer(reader, writer)
        writer.close()

    async def run() -> tuple[StreamResult, str | None]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            host, port, request = speech_request(f"http://127.0.0.1:{port}", "Hello there.")
            return await raw_speak(host, port, request, 7, timeout_s)

    result, retry_after = asyncio.run(run())
    return result, retry_after, seen[0]


def test_a_chunked_200_is_counted_as_audio_as_it_arrives() -> None:
    pcm = [b"\x01\x00" * 2400, b"\x02\x00" * 4800]  # 0.1 s, then 0.2 s of 24 kHz s16le

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pcm:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")

    result, retry_after, request = _call(answer)
    assert request.startswith(b"POST /v1/audio/speech HTTP/1.1\r\n") and b'"input": "Hello there."' in request
    assert result.status == 200 and result.error is None and result.index == 7
    assert result.audio_s == pytest.approx(sum(map(len, pcm)) / PCM_BYTES_PER_SECOND)
    arrivals = result.arrivals
    assert [round(a, 3) for _, a in arrivals] == [0.1, 0.3]
    assert arrivals[1][0] - arrivals[0][0] >= 0.04 and result.ttfa_s == arrivals[0][0]
    assert retry_after is None


def test_a_429_keeps_its_retry_after_and_body() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error": {"code": "queue_full"}}'
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    result, retry_after, _ = _call(answer)
    assert result.status == 429 and retry_after == "3"
    assert result.error is not None and "queue_full" in result.error
    assert result.end_s is not None and result.audio_s == 0.0


def test_a_200_cut_short_or_a_silent_server_is_an_error_not_an_exception() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort")

    result, _, _ = _call(cut)
    assert result.status == 200 and result.error is not None and "IncompleteRead" in result.error

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)

    result, _, _ = _call(silent, timeout_s=0.2)
    assert result.status is None and result.error == "timeout after 0 s"
