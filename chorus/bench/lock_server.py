"""The fair one-at-a-time baseline: what a lock-per-request Piper server really is.

One request is synthesised at a time (an asyncio lock, first come first served) with Piper's own API as its users
call it: ``PiperVoice.load`` (one ONNX Runtime session with Piper's default options, so its intra-op threads use
every core) and ``PiperVoice.synthesize``, which yields the audio sentence by sentence; each sentence is streamed
to the client the moment it is made (a WAV header first, then s16le PCM at the voice's rate). The lock is held
while a request is synthesised; a client that goes away does not stop its synthesis (as with Piper's own server).

    python -m chorus.bench.lock_server --port 8101 [--model VOICE.onnx]

Routes match Piper's own HTTP server where the bench needs them: ``POST /synthesize {"text"}`` and
``GET /info`` (readiness).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

STREAMING_SIZE = 0xFFFFFFFF  # unknown length, as streaming WAV writers mark it


class SynthesizeRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", STREAMING_SIZE)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", STREAMING_SIZE))
    )


def create_app(model_path: str) -> FastAPI:
    from piper import PiperVoice

    voice = PiperVoice.load(model_path)  # Piper's defaults: one session, intra-op threads = cores
    rate = int(voice.config.sample_rate)
    lock = asyncio.Lock()
    app = FastAPI(title="one-at-a-time Piper")
    info: dict[str, Any] = {"model": model_path, "sample_rate": rate, "requests": 0}

    def produce(text: str, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[bytes | None]) -> None:
        try:
            for chunk in voice.synthesize(text):
                loop.call_soon_threadsafe(out.put_nowait, chunk.audio_int16_bytes)
        finally:
            loop.call_soon_threadsafe(out.put_nowait, None)

    async def body(text: str) -> AsyncIterator[bytes]:
        yield wav_header(rate)
        async with lock:  # one synthesis at a time, in arrival order
            loop = asyncio.get_running_loop()
            out: asyncio.Queue[bytes | None] = asyncio.Queue()
            worker = threading.Thread(target=produce, args=(text, loop, out), daemon=True)
            worker.start()
            while (piece := await out.get()) is not None:  # each sentence as soon as it is made
                yield piece
        info["requests"] += 1

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        return info

    @app.post("/synthesize")
    async def synthesize(request: SynthesizeRequest) -> StreamingResponse:
        return StreamingResponse(body(request.text), media_type="audio/wav")

    return app


def main(argv: list[str] | None = None) -> int:
    from chorus.bench.servers import piper_model_path

    parser = argparse.ArgumentParser(prog="python -m chorus.bench.lock_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--model", default=None, help="a Piper .onnx voice (default: the bundled one)")
    args = parser.parse_args(argv)
    app = create_app(args.model or piper_model_path())
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
