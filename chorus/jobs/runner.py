"""The job worker inside a server: leases items from SQL and synthesises them at the lowest priority.

Live traffic first: a worker takes a new item only while no live request waits for a slot, and runs at most
``jobs.concurrency`` items at once, each as an ordinary stream at priority -100 (admission control still plans
it, so a running item never makes a live stream stutter; what it costs live first-audio times is measured by
``chorus bench-jobs``; its audio is encoded off the event loop, as every compressed response is). While it works
it renews the item's lease; if the lease is lost (the job was cancelled, or this worker stalled past it and another
took over) it stops at once and its result is discarded.

On shutdown a worker gives its items back (``release_owner``) so another replica takes them without waiting
for the leases to expire; after a SIGKILL they expire and are taken all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from chorus.audio.encode import MEDIA_TYPES, sized_wav
from chorus.engine.client import AsyncEngine
from chorus.errors import ChorusError, EngineDeadError, QueueFullError
from chorus.jobs.items import order_of
from chorus.server.streaming import encoded_chunks
from chorus.speech import SpeechService
from chorus.store.jobs import JobStore, Lease

log = logging.getLogger(__name__)
JOB_PRIORITY = -100  # below every live request (their priority is -100..100, 0 by default)


@dataclass(frozen=True)
class RunnerConfig:
    concurrency: int = 1
    lease_s: float = 30.0
    max_attempts: int = 3
    poll_s: float = 0.5


def worker_name() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is another worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        speech: SpeechService,
        engine: AsyncEngine,
        config: RunnerConfig,
        *,
        out_rate: int,
        on_item: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.speech = speech
        self.engine = engine
        self.config = config
        self.out_rate = out_rate
        self.owner = worker_name()
        self.on_item = on_item  # told each item's outcome ("succeeded", "failed", "released", "lost")
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.create_task(self._loop(), name="chorus-jobs")

    async def stop(self) -> None:
        """Stop taking items, stop the running ones and give every item this worker holds back."""
        self._stopping.set()
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        released = await asyncio.to_thread(self.store.release_owner, self.owner)
        if released:
            log.info("gave back %d job item(s) on shutdown", released)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def _loop(self) -> None:
        cfg = self.config
        while not self._stopping.is_set():
            try:
                if len(self._tasks) >= cfg.concurrency or not self._has_room():
                    await asyncio.sleep(cfg.poll_s)
                    continue
                lease = await asyncio.to_thread(self.store.claim, self.owner, cfg.lease_s, cfg.max_attempts)
            except Exception:  # the database is down: try again later, the server goes on
                log.exception("job worker: cannot claim an item")
                await asyncio.sleep(max(cfg.poll_s, 1.0))
                continue
            if lease is None:
                await asyncio.sleep(cfg.poll_s)
                continue
            task = asyncio.create_task(self._run(lease), name=f"chorus-job-{lease.job_id}-{lease.n}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _has_room(self) -> bool:
        """Live traffic first: no item starts while a live request waits for a slot or the engine is down."""
        return self.engine.is_alive() and self.engine.num_waiting == 0

    async def _run(self, lease: Lease) -> None:
        outcome = "failed"
        try:
            outcome = await self._work(lease)
        except asyncio.CancelledError:
            outcome = "released"
            raise
        except Exception as e:  # a bug: fail the item (not retried: it would fail again) and keep the worker
            log.exception("job %s item %d failed", lease.job_id, lease.n)
            await asyncio.to_thread(self.store.fail, lease, "internal_error", f"{type(e).__name__}")
        finally:
            if self.on_item is not None:
                self.on_item(outcome)

    async def _work(self, lease: Lease) -> str:
        fmt = str(lease.spec.get("response_format", "mp3"))
        keeper = asyncio.create_task(self._keep(lease))
        synth = asyncio.create_task(self._synthesise(lease, fmt))
        try:
            done, _ = await asyncio.wait({keeper, synth}, return_when=asyncio.FIRST_COMPLETED)
            if synth not in done:  # the lease was lost before the audio was ready
                synth.cancel()
                with contextlib.suppress(asyncio.CancelledError, ChorusError):
                    await synth
                log.info("job %s item %d: lease lost, result dropped", lease.job_id, lease.n)
                return "lost"
            try:
                audio, audio_s = synth.result()
            except (QueueFullError, EngineDeadError):  # no room now, or the engine is down: another try later
                await asyncio.to_thread(self.store.release, lease)
                return "released"
            except ChorusError as e:  # the item itself is bad (unknown voice, text too long...): not retried
                await asyncio.to_thread(self.store.fail, lease, e.code or e.error_type, e.message)
                return "failed"
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not synth.done():
                synth.cancel()
        recorded = await asyncio.to_thread(
            lambda: self.store.succeed(
                lease, audio, extension=fmt, content_type=MEDIA_TYPES[fmt], audio_s=round(audio_s, 3)
            )
        )
        return "succeeded" if recorded else "lost"

    async def _synthesise(self, lease: Lease, fmt: str) -> tuple[bytes, float]:
        order = order_of(lease.spec, tenant_id=lease.tenant_id, priority=JOB_PRIORITY)
        stream = await self.speech.open(order)
        try:
            first = await anext(stream, None)
            parts = [data async for data in encoded_chunks(first, stream, fmt, self.out_rate)]
        finally:
            stream.abort()
        audio = b"".join(parts)
        return (sized_wav(audio) if fmt == "wav" else audio), stream.audio_seconds

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease every third of its length; return when it is lost (or cannot be renewed)."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            try:
                if not await asyncio.to_thread(self.store.renew, lease, self.config.lease_s):
                    return
            except Exception:
                log.exception("job %s item %d: cannot renew its lease", lease.job_id, lease.n)
                return
