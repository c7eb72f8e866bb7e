"""One way in for every synthesis: the HTTP routes, the library API (``chorus.TTS``) and the CLI build, check
and queue their requests here, so a rule about requests (limits, voices, and later keys, marks and audit rows)
is written once.

    order = SpeechOrder("Hello.", voice="alloy", params=SynthesisParams(speed=1.1))
    stream = await speech.open(order)        # the server: an async stream of outputs
    for out in speech.stream(order): ...     # a thread: the library and the CLI
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from chorus.audio.resample import hold_back_s
from chorus.audit import AuditWriter, SynthesisReceipt
from chorus.config import Settings
from chorus.engine.client import AsyncEngine, ResponseStream, new_request_id
from chorus.engine.request import Request, RequestOutput
from chorus.errors import InvalidRequestError, QueueFullError
from chorus.models.base import SpeechInput, SynthesisParams
from chorus.store.tenants import DEFAULT_TENANT
from chorus.voices.catalog import VoiceCatalog
from chorus.watermark.marking import Marking, OutputMarker

log = logging.getLogger(__name__)
# Requests phonemized / tokenized at once (each on a thread); the rest wait their turn on the event loop.
PREPARE_AT_ONCE = 4


class SpeechStream(ResponseStream):
    """A request's outputs, watermarked, with the receipt its audit row is made from (the HTTP layer feeds and
    seals it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        request_id: str,
        loop: asyncio.AbstractEventLoop,
        receipt: SynthesisReceipt,
        marker: OutputMarker | None = None,
    ) -> None:
        super().__init__(engine, request_id, loop)
        self.receipt = receipt
        self._marker = marker
        self._last: RequestOutput | None = None
        # Sees each output as it passes (word timestamps watch the alignments this way).
        self.observer: Callable[[RequestOutput], None] | None = None

    async def __anext__(self) -> RequestOutput:
        marker = self._marker
        try:
            out = await super().__anext__()
        except StopAsyncIteration:
            tail = marker.tail(self._last) if marker is not None and self._last is not None else None
            if tail is None:
                raise
            return tail
        if self.observer is not None:
            self.observer(out)
        if marker is None:
            return out
        self._last = out
        return marker.mark(out)


class VoiceResolver(Protocol):
    """Names a caller uses → the engine's voice id."""

    def builtin_id(self, name: str | None) -> str | None:
        """A built-in voice's id without any I/O, or None when ``name`` is not one (it may be a cloned voice)."""
        ...

    def resolve(self, tenant_id: str, name: str | None, *, param: str = "voice") -> str:
        """Any voice the tenant may use (may block: a store lookup, a model loaded once)."""
        ...


class BuiltinVoices:
    """A resolver for a process without a voice store (the library, the CLI): the backend's own voices."""

    def __init__(self, catalog: VoiceCatalog) -> None:
        self.catalog = catalog

    def builtin_id(self, name: str | None) -> str | None:
        return self.catalog.resolve(name).voice_id

    def resolve(self, tenant_id: str, name: str | None, *, param: str = "voice") -> str:
        return self.catalog.resolve(name, param=param).voice_id


class SamplingKnobs(Protocol):
    """The per-request synthesis knobs a route or a job item carries (None: the backend's default)."""

    language: str | None
    noise_scale: float | None
    noise_w_scale: float | None
    seed: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None


def synthesis_params(knobs: SamplingKnobs, *, speed: float, instructions: str | None) -> SynthesisParams:
    defaults = SynthesisParams()
    return SynthesisParams(
        speed=speed,
        language=knobs.language,
        instructions=instructions,
        noise_scale=knobs.noise_scale,
        noise_w_scale=knobs.noise_w_scale,
        seed=knobs.seed,
        temperature=defaults.temperature if knobs.temperature is None else knobs.temperature,
        top_k=defaults.top_k if knobs.top_k is None else knobs.top_k,
        top_p=defaults.top_p if knobs.top_p is None else knobs.top_p,
        repetition_penalty=defaults.repetition_penalty
        if knobs.repetition_penalty is None
        else knobs.repetition_penalty,
    )


@dataclass(frozen=True)
class SpeechOrder:
    """What a caller asks for, from whichever door it came in."""

    text: str
    voice: str | None = None
    params: SynthesisParams = field(default_factory=SynthesisParams)
    priority: int = 0
    tenant_id: str = DEFAULT_TENANT
    request_id: str | None = None  # the caller's name for it (X-Request-Id), else a new one
    timeout_s: float | None = None  # the caller's own limit; the server's limit applies as well
    text_param: str = "input"  # how the caller's API names the text, for error messages
    response_format: str | None = None  # for the audit row
    key_id: str | None = None  # the API key it came with (None: keyless)
    max_concurrency: int | None = None  # that key's limit on requests in flight at once (this process)
    plays_at: float | None = None  # monotonic time its client starts playing it (None: at once)
    sample_rate: int | None = None  # the rate its client gets (None: the engine's): resampling holds audio back
    # Nobody listens while it is made (a batch job's item): no playback deadline, only CPU live work leaves idle.
    background: bool = False


@dataclass(frozen=True)
class SpeechLimits:
    max_input_chars: int
    request_timeout_s: float | None = None
    log_text: bool = False  # log each request's text once (log.include_text)


class SpeechService:
    def __init__(
        self,
        engine: AsyncEngine,
        voices: VoiceResolver,
        limits: SpeechLimits,
        *,
        marking: Marking | None,
        audit: AuditWriter | None = None,
    ) -> None:
        """``marking``: the watermark every output carries (None only where no audio leaves the process marked
        on purpose: tests and benchmarks of the engine itself)."""
        self.engine = engine
        self.voices = voices
        self.limits = limits
        self.marking = marking
        if marking is not None:
            marking.marker(DEFAULT_TENANT, engine.backend.sample_rate)  # refuses a rate the mark cannot take, now
        self.audit = audit
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # per API key
        self._owners: dict[str, str] = {}  # request id -> tenant, while in flight
        self._prep_slots: asyncio.Semaphore | None = None
        self._prep_loop: asyncio.AbstractEventLoop | None = None

    def _timeout(self, order: SpeechOrder) -> float | None:
        """The request's time limit: the caller's own, capped by the server's (which is for callers waiting: a
        background order, a job's item, waits for idle CPU as long as live work keeps the cores, under its lease)."""
        if order.background:
            return order.timeout_s
        return _shortest(order.timeout_s, self.limits.request_timeout_s)

    def _preparing(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._prep_slots is None or self._prep_loop is not loop:
            self._prep_slots, self._prep_loop = asyncio.Semaphore(PREPARE_AT_ONCE), loop
        return self._prep_slots

    def tenant_of_request(self, request_id: str) -> str | None:
        """The tenant that queued this request while it is in flight (another tenant's ids read as unknown)."""
        with self._lock:
            return self._owners.get(request_id)

    async def open(self, order: SpeechOrder) -> SpeechStream:
        """Check, resolve the voice, prepare and queue off the event loop; return the stream at once. 4xx, 429
        and 503 errors raise here, before any audio. Wait limits count from here, preparation included."""
        received = time.monotonic()
        release = self._admit(order, received)
        preparing = self.engine.preparing
        ticket = preparing.enter(order.priority, len(order.text))  # those arriving later queue behind it
        try:
            voice_id = self.voices.builtin_id(order.voice)
            if voice_id is None:  # a cloned voice: a store lookup, and its model loaded once per process
                voice_id = await asyncio.to_thread(self.voices.resolve, order.tenant_id, order.voice)
            inp = self._input(order, voice_id)
            if self.limits.log_text:
                log.info("speech %s: %r", inp.request_id, order.text)
            # Phonemization / tokenization is CPU work: off the event loop, and off the engine loop; a few at a
            # time, each first asking again whether it can still start in time, behind those still being prepared
            # ahead of it (a flood's late callers get their 429 at once, not after everyone ahead was phonemized).
            async with self._preparing():
                self.engine.check_queue(
                    order.priority,
                    self._timeout(order),
                    order.plays_at,
                    arrival=received,
                    ticket=ticket,
                )
                prepared = await asyncio.to_thread(self._prepare, inp)
            receipt = SynthesisReceipt(
                self.audit,
                tenant_id=order.tenant_id,
                key_id=order.key_id,
                voice_id=voice_id,
                request_id=inp.request_id,
                text=order.text,
                response_format=order.response_format,
            )
            marker = self._marker(order)
            if self.marking is not None:
                receipt.watermark = self.marking.receipt(order.tenant_id)
            stream = SpeechStream(self.engine, inp.request_id, asyncio.get_running_loop(), receipt, marker)
            self._add(order, inp, prepared, stream.put_threadsafe, release, received)
        except BaseException:  # refused, failed or cancelled (the client left) before it was queued
            release()
            raise
        finally:
            preparing.leave(ticket)
        return stream

    def stream(self, order: SpeechOrder) -> Iterator[RequestOutput]:
        """The same for a thread: yield outputs as the engine makes them; raise the request's typed error on
        failure; stopping early frees the slot."""
        received = time.monotonic()
        release = self._admit(order, received)
        try:
            inp = self._input(order, self.voices.resolve(order.tenant_id, order.voice))
            prepared = self._prepare(inp)
            outputs: queue.Queue[RequestOutput] = queue.Queue()
            self._add(order, inp, prepared, outputs.put, release, received)
        except BaseException:
            release()
            raise
        marker = self._marker(order)
        finished = False
        try:
            while True:
                out = outputs.get()
                if out.is_finished:
                    finished = True
                    if out.error is not None:
                        raise out.error
                    last = marker.mark(out) if marker is not None else out
                    if last.audio.size:
                        yield last
                    return
                yield marker.mark(out) if marker is not None else out
        finally:
            if not finished:  # the caller stopped iterating early
                self.engine.abort(inp.request_id)

    def _marker(self, order: SpeechOrder) -> OutputMarker | None:
        if self.marking is None:
            return None
        return self.marking.marker(order.tenant_id, self.engine.backend.sample_rate)

    def _admit(self, order: SpeechOrder, received: float) -> Callable[[], None]:
        """Check the text, then (before any work) the key's own limit and the shared queue. The request counts
        against its key from here on, so two at once cannot both pass a limit; returns the (idempotent) release."""
        limit, param = self.limits.max_input_chars, order.text_param
        if len(order.text) > limit:
            raise InvalidRequestError(f"{param} is {len(order.text)} characters; the limit is {limit}", param=param)
        if not order.text.strip():
            raise InvalidRequestError(f"{param} is blank", param=param)
        key = order.key_id
        timeout = self._timeout(order)
        if key is None:
            self.engine.check_queue(order.priority, timeout, order.plays_at, arrival=received)
            return lambda: None
        with self._lock:
            busy = self._in_flight[key]
            if order.max_concurrency is not None and busy >= order.max_concurrency:
                raise QueueFullError(
                    f"this API key already has {busy} requests in flight, its limit",
                    retry_after_s=1.0,
                    code="key_concurrency_limit",
                )
            self._in_flight[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._in_flight[key] -= 1
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]

        try:
            self.engine.check_queue(order.priority, timeout, order.plays_at, arrival=received)
        except BaseException:
            release()
            raise
        return release

    def _input(self, order: SpeechOrder, voice_id: str) -> SpeechInput:
        return SpeechInput(order.request_id or new_request_id(), order.text, voice_id, order.params)

    def _prepare(self, inp: SpeechInput) -> object:
        try:
            return self.engine.backend.preprocess(inp)
        except ValueError as e:
            raise InvalidRequestError(str(e), param="input") from e

    def _add(
        self,
        order: SpeechOrder,
        inp: SpeechInput,
        prepared: object,
        sink: Callable[[RequestOutput], None],
        release_key: Callable[[], None],
        received: float,
    ) -> None:
        """Queue the request; it counts against its key and belongs to its tenant until its final output."""
        rid = inp.request_id

        def release() -> None:
            with self._lock:
                self._owners.pop(rid, None)
            release_key()

        def counted_sink(out: RequestOutput) -> None:
            if out.is_finished:
                release()
            sink(out)

        with self._lock:
            self._owners[rid] = order.tenant_id
        engine_rate = self.engine.backend.sample_rate
        request = Request(
            inp,
            counted_sink,
            prepared=prepared,
            priority=order.priority,
            timeout_s=self._timeout(order),
            arrival_time=received,
            plays_at=order.plays_at,
            hold_back_s=hold_back_s(engine_rate, order.sample_rate or engine_rate),
            background=order.background,
        )
        try:
            self.engine.add(request)
        except BaseException:
            release()
            raise


def _shortest(*limits: float | None) -> float | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None


def speech_limits(settings: Settings) -> SpeechLimits:
    return SpeechLimits(settings.server.max_input_chars, settings.server.request_timeout_s, settings.log.include_text)
