"""The synchronous engine: schedule → one batched backend call → update, in a thread of its own.

Nothing here knows asyncio. Other threads talk to the engine through ``add_request``, ``abort`` and
``status`` (all thread-safe); outputs leave through each request's sink, called from the engine thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from chorus.audio.crossfade import Crossfader
from chorus.engine.admission import AdmissionConfig, PlannedAdmission
from chorus.engine.config import EngineConfig, RequestInfo
from chorus.engine.forecast import Forecast
from chorus.engine.metrics import EngineMetrics
from chorus.engine.pipeline import run_pipelined
from chorus.engine.request import Lead, Request, RequestOutput, RequestStatus
from chorus.engine.scheduler import Scheduler, SchedulerConfig
from chorus.engine.watchdog import StepClock, watch
from chorus.errors import (
    ChorusError,
    EngineDeadError,
    EngineStalledError,
    InvalidRequestError,
    QueueFullError,
    RequestAbortedError,
    RequestTimeoutError,
    SynthesisError,
)
from chorus.models.base import Backend, PhonemeAlignment, SlotState, StepOutput, WorkPlanner, usable_cores

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig) -> None:
        self.backend = backend
        self.config = config
        budget = config.step_budget_s if backend.is_compute_bound else None
        lead = Lead(config.lead_s)
        sched = SchedulerConfig(
            config.max_slots,
            config.mode,
            budget,
            backend.num_workers,
            config.first_audio_target_s,
            config.delivery_margin_s,
            lead,
        )
        self.admission: PlannedAdmission | None = None
        if (
            backend.is_compute_bound
            and config.max_load is not None
            and config.mode == "continuous"
            and isinstance(backend, WorkPlanner)
        ):
            admission = AdmissionConfig(
                backend.num_workers,
                config.max_load,
                config.first_audio_target_s,
                config.delivery_margin_s,
                lead,
                newcomer_lane=self.is_pipelined,
            )
            self.admission = PlannedAdmission(backend, admission, backend.sample_rate, usable_cores())
        # Predicted waits and refusals (429) of waiting requests, under admission control.
        self.forecast = (
            Forecast(self.admission, config.max_slots, config.max_queue_wait_s) if self.admission is not None else None
        )
        # Under admission control, the scheduler orders slots by wall-clock cost (CPU estimate x learned factor).
        self.scheduler = Scheduler(
            sched, self._wall_cost if self.admission else backend.estimate_cost, backend.sample_rate
        )
        self.metrics = EngineMetrics()
        self._overlap = round(config.crossfade_s * backend.sample_rate)
        self._cond = threading.Condition()
        self._inbox: deque[Request] = deque()
        self._aborts: deque[tuple[str, ChorusError]] = deque()
        self._by_id: dict[str, Request] = {}
        self._sequence = 0
        self._dead: EngineDeadError | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = StepClock()  # backend steps running now (the watchdog reads it)
        self._stalled: EngineStalledError | None = None

    def _wall_cost(self, slot: SlotState) -> float:
        factor = self.admission.load.wall_factor() if self.admission is not None else 1.0
        return self.backend.estimate_cost(slot) * factor

    # -- thread-safe API ---------------------------------------------------------------------------

    def add_request(self, req: Request) -> None:
        """Queue a request (returns at once). Raises QueueFullError or EngineDeadError."""
        with self._cond:
            if self._dead is not None:
                raise self._dead
            if self._stopping:
                raise EngineDeadError("the engine is shutting down")
            if req.request_id in self._by_id:
                raise InvalidRequestError(f"request id {req.request_id!r} is already in use", param="request_id")
            if len(self._inbox) + self.scheduler.num_waiting >= self.config.queue_limit:
                raise QueueFullError("the waiting queue is full", retry_after_s=self.retry_after_s())
            self._sequence += 1
            req.sequence = self._sequence
            req.crossfader = Crossfader(self._overlap)
            if req.max_frames is None and self.backend.is_autoregressive:
                req.max_frames = self.config.max_frames
            self._by_id[req.request_id] = req
            self._inbox.append(req)
            self._cond.notify()

    def abort(self, request_id: str, error: ChorusError | None = None) -> None:
        with self._cond:
            self._aborts.append((request_id, error or RequestAbortedError("request aborted")))
            self._cond.notify()

    def status(self, request_id: str) -> RequestInfo | None:
        with self._cond:
            req = self._by_id.get(request_id)
            if req is None:
                return None
            if req.status != RequestStatus.WAITING:
                return RequestInfo(request_id, req.status.name.lower(), None, None)
            order = self.scheduler.waiting() + list(self._inbox)
            position = next((i for i, r in enumerate(order) if r is req), len(order))
            predicted = req.predicted_first_audio
            arrival = req.arrival_time
        if predicted is not None and math.isfinite(predicted):
            return RequestInfo(request_id, "waiting", position, max(0.0, predicted - time.monotonic()), arrival)
        return RequestInfo(request_id, "waiting", position, self._eta(position), arrival)

    def waiting_arrivals(self) -> list[float]:
        """``time.monotonic()`` arrival of each waiting request, in admission order (the fleet publishes them)."""
        with self._cond:
            return [r.arrival_time for r in [*self.scheduler.waiting(), *self._inbox]]

    def newcomer_wait_s(self) -> float:
        """How long a request arriving now would wait for a slot: 0 with a slot free and nobody waiting."""
        if self.num_waiting == 0 and self.num_running < self.config.max_slots:
            return 0.0
        return self.retry_after_s()

    def is_alive(self) -> bool:
        return self._dead is None and self._thread is not None and self._thread.is_alive()

    @property
    def num_waiting(self) -> int:
        return len(self._inbox) + self.scheduler.num_waiting

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    # -- loop ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chorus-engine", daemon=True)
        self._thread.start()
        if (limit := self.config.stall_timeout_s) is not None:
            ended = lambda: self._dead is not None or self._stopping  # noqa: E731
            args = (self.steps, limit, ended, self._stall)
            threading.Thread(target=watch, args=args, name="chorus-watchdog", daemon=True).start()

    def _stall(self, error: EngineStalledError) -> None:
        """The watchdog found a hung step: the engine thread fails everyone itself if it is free (pipelined: a
        worker hangs); if it is the one stuck (lockstep), they are failed from here."""
        with self._cond:
            self._stalled = error
            self._cond.notify()
        time.sleep(1.0)
        if self._dead is None:
            self._die(error)

    def shutdown(self, drain_timeout_s: float = 0.0, *, close_backend: bool = True) -> None:
        """Stop taking requests, let running ones finish for up to drain_timeout_s, abort the rest, and close the
        backend (unless ``close_backend`` is False: a backend shared with other engines, as in tests)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        deadline = time.monotonic() + drain_timeout_s
        while self.has_work() and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.02)
        with self._cond:
            for req in list(self._by_id.values()):
                self._aborts.append((req.request_id, EngineDeadError("the server is shutting down")))
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if close_backend:
            self.backend.close()

    def has_work(self) -> bool:
        return bool(self._inbox or self._aborts or self.scheduler.num_waiting or self.scheduler.running)

    @property
    def is_pipelined(self) -> bool:
        """CPU backends with several workers run pipelined (see engine/pipeline.py); the rest in lockstep."""
        return self.backend.is_compute_bound and self.backend.num_workers > 1 and self.config.mode == "continuous"

    def wait_for_work(self, ready: Callable[[], bool], timeout_s: float = 0.5) -> bool:
        """Block the engine thread until ``ready()`` or new input (requests, aborts, shutdown). Raises the
        watchdog's EngineStalledError once it has declared a stall (the loop dies with it)."""
        with self._cond:
            while not (ready() or self._inbox or self._aborts or self._stopping or self._stalled):
                if not self._cond.wait(timeout=timeout_s):
                    break
            if self._stalled is not None:
                raise self._stalled
            return not self._stopping or self.has_work()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        try:
            if self.is_pipelined:
                run_pipelined(self)
            else:
                while self.wait_for_work(self.has_work):
                    if self.has_work():
                        self.step()
        except Exception as e:
            self._die(e)

    def step(self) -> int:
        """One lockstep iteration: schedule → one batched backend call → update. Returns slots advanced."""
        self.prepare()
        batch = self.scheduler.pick(self.scheduler.step_budget_s)
        if not batch:
            return 0
        self.begin(batch)
        outputs, duration = self.execute(batch)
        self.complete(batch, outputs, duration)
        return len(batch)

    def prepare(self) -> None:
        """Take in new requests and aborts, expire late requests, admit and prefill into free slots, and (under
        admission control) predict when the waiting ones will start, refusing those that would wait too long."""
        now = time.monotonic()
        self._drain()
        for req in self.scheduler.all_requests():
            if req.is_expired(now):
                error = RequestTimeoutError(f"request took longer than {req.timeout_s:g} s")
                self._finish(req, RequestStatus.FINISHED_TIMEOUT, error)
        admitted = self.scheduler.admit(self._admission_limit(now))
        if admitted:
            self._prefill(admitted)
        if self.forecast is None:
            return
        if not self.scheduler.num_waiting:
            self.forecast.nobody_waits()
            return
        for req, refusal in self.forecast.predict(self.scheduler.running, self.scheduler.waiting(), now):
            self._finish(req, RequestStatus.FINISHED_ERROR, refusal)

    def _admission_limit(self, now: float) -> int | None:
        """How many requests may run after this round of admissions (None = only max_slots applies)."""
        if self.admission is None:
            return None
        running = self.scheduler.running
        free = self.config.max_slots - len(running)
        candidates = self.scheduler.waiting()[: max(free, 0)]
        if not candidates:
            return None
        return len(running) + self.admission.admissible(running, candidates, now, self.admission.budget())

    def begin(self, batch: list[Request]) -> None:
        """Mark a batch as handed to a worker, noting what its step was estimated to cost (the learned margin)."""
        for req in batch:
            req.in_flight = True
            req.planned_cost_s = self.backend.estimate_cost(req.slot) if req.slot is not None else 0.0

    def execute(self, batch: list[Request]) -> tuple[list[StepOutput], float]:
        """The one batched backend call (thread-safe for disjoint batches: pipelined workers call it)."""
        t0 = time.perf_counter()
        # A background lane's step gets only CPU live work leaves idle: under a long overload it may wait minutes,
        # which is no stall, so the watchdog does not time it (a backend that hangs hangs live steps as well).
        timing = contextlib.nullcontext() if all(r.background for r in batch) else self.steps.timing()
        with timing:
            outputs = self.backend.step([r.slot for r in batch if r.slot is not None])
        if len(outputs) != len(batch):
            raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(batch)} slots")
        return outputs, time.perf_counter() - t0

    def complete(self, batch: list[Request], outputs: list[StepOutput], duration_s: float) -> None:
        """Hand a step's outputs to their requests (engine thread only)."""
        samples = 0
        for req, out in zip(batch, outputs, strict=True):
            req.in_flight = False
            if req.pending_finish is not None:  # aborted or expired while its slot was on a worker
                self._finish(req, *req.pending_finish)
            elif not req.status.is_finished:
                samples += self._update(req, out)
        audio_s = samples / self.backend.sample_rate
        self.metrics.observe_step(duration_s, len(batch), audio_s)
        if self.admission is not None:
            cpu = sum(out.cpu_s for out in outputs)
            # Slots of one step may run on several workers at once; a background lane gets only idle CPU: neither
            # tells how much of a core a worker gets.
            wall = duration_s if len(batch) == 1 and not batch[0].background else None
            self.admission.observe_step(sum(r.planned_cost_s for r in batch), cpu, wall, audio_s)

    # -- internals -----------------------------------------------------------------------------------

    def _drain(self) -> None:
        with self._cond:
            incoming = list(self._inbox)
            self._inbox.clear()
            aborts = list(self._aborts)
            self._aborts.clear()
        for req in incoming:
            self.scheduler.add(req)
        for request_id, error in aborts:
            target = self._by_id.get(request_id)
            if target is not None:
                status = (
                    RequestStatus.FINISHED_ABORTED
                    if isinstance(error, RequestAbortedError)
                    else RequestStatus.FINISHED_ERROR
                )
                self._finish(target, status, error)

    def _prefill(self, admitted: list[Request]) -> None:
        try:
            slots = self.backend.prefill([(r.input, r.prepared) for r in admitted])
        except Exception:
            # Isolate the bad request: prefill one by one.
            for req in admitted:
                try:
                    (req.slot,) = self.backend.prefill([(req.input, req.prepared)])
                except ValueError as e:  # the backend's word for "this input cannot be spoken": the client's fault
                    self._finish(req, RequestStatus.FINISHED_ERROR, InvalidRequestError(str(e)))
                except Exception as e:  # a fault of the backend: logged and answered 500, not blamed on the client
                    log.exception("request %s failed in the backend's prefill", req.request_id)
                    self._finish(req, RequestStatus.FINISHED_ERROR, SynthesisError(f"synthesis failed: {e!r}"))
            return
        for req, slot in zip(admitted, slots, strict=True):
            req.slot = slot

    def _update(self, req: Request, out: StepOutput) -> int:
        if out.error is not None:
            log.warning("request %s failed in the backend: %r", req.request_id, out.error)
            self._finish(req, RequestStatus.FINISHED_ERROR, SynthesisError(f"synthesis failed: {out.error}"))
            return 0
        crossfader = req.crossfader or Crossfader(0)
        # Where this output's first raw sample lands in the stream: its head overlaps the held-back tail.
        offset = req.num_samples_sent + crossfader.pending - min(crossfader.pending, out.audio.size)
        audio = crossfader.push(out.audio, is_segment_end=out.is_segment_end)
        req.num_frames += out.num_frames
        hit_cap = req.max_frames is not None and req.num_frames >= req.max_frames and not out.is_finished
        if hit_cap and req.slot is not None:  # the runaway guard: take what the backend still holds, stop
            audio = np.concatenate([audio, crossfader.push(self.backend.flush(req.slot), is_segment_end=False)])
        finished = out.is_finished or hit_cap
        if finished:
            audio = np.concatenate([audio, crossfader.flush()])
        alignments = tuple(replace(a, start_sample=a.start_sample + offset) for a in out.alignments)
        if audio.size:
            now = time.monotonic()
            if req.background:  # nobody plays it: no first-audio time or underrun to count
                req.first_audio_time = req.first_audio_time or now
            elif req.first_audio_time is None:
                req.first_audio_time = now
                self.metrics.observe_first_audio(now - req.arrival_time)
            else:
                late = now - req.deadline(self.backend.sample_rate)
                self.metrics.observe_chunk(now - (req.last_audio_time or now), late)
            req.last_audio_time = now
        req.num_samples_sent += audio.size
        if audio.size or alignments:
            req.sink(self._output(req, audio, alignments))
        if finished:
            self._finish(req, RequestStatus.FINISHED_STOPPED, None)
        return int(audio.size)

    def _output(
        self,
        req: Request,
        audio: np.ndarray,
        alignments: tuple[PhonemeAlignment, ...] = (),
        *,
        status: RequestStatus = RequestStatus.RUNNING,
        error: ChorusError | None = None,
    ) -> RequestOutput:
        sr = self.backend.sample_rate
        return RequestOutput(
            req.request_id,
            audio,
            sr,
            alignments,
            is_finished=status.is_finished,
            status=status,
            error=error,
            audio_seconds=req.num_samples_sent / sr,
            predicted_first_audio_s=req.first_prediction_s,
        )

    def _finish(self, req: Request, status: RequestStatus, error: ChorusError | None) -> None:
        if req.status.is_finished:
            return
        if req.in_flight:  # a worker holds its slot: finish when the slot comes back
            req.pending_finish = req.pending_finish or (status, error)
            return
        self.scheduler.remove(req)
        if req.slot is not None:
            self.backend.release(req.slot)
        req.status = status
        with self._cond:
            self._by_id.pop(req.request_id, None)
        service = time.monotonic() - req.arrival_time if status == RequestStatus.FINISHED_STOPPED else None
        self.metrics.observe_finish(status.name.lower(), service, req.num_samples_sent / self.backend.sample_rate)
        empty = np.zeros(0, dtype=np.float32)
        try:
            req.sink(self._output(req, empty, status=status, error=error))
        except Exception:  # a consumer that went away must not take the engine down
            log.exception("sink of request %s failed", req.request_id)

    def _die(self, exc: BaseException) -> None:
        dead = exc if isinstance(exc, EngineDeadError) else EngineDeadError(f"the engine failed: {exc}")
        with self._cond:
            if self._dead is not None:  # the watchdog and the engine thread may both get here
                return
            self._dead = dead
        if not isinstance(exc, EngineStalledError):
            log.exception("engine loop failed; failing every request", exc_info=exc)
        with self._cond:
            pending = list(self._inbox)
            self._inbox.clear()
        for req in [*self.scheduler.all_requests(), *pending]:
            req.in_flight = False  # nothing more will come back from the workers
            self._finish(req, RequestStatus.FINISHED_ERROR, dead)

    def _eta(self, position: int) -> float:
        free = self.config.max_slots - len(self.scheduler.running)
        if position < free:
            return self.metrics.mean_step_s()
        rounds = (position - max(free, 0)) // self.config.max_slots + 1
        return rounds * self.metrics.mean_service_s() / 2 + self.metrics.mean_step_s()

    def retry_after_s(self) -> float:
        """When a refused caller should come back: when the last waiting request is predicted to start, where
        admission control predicts, else from the mean service time."""
        now = time.monotonic()
        predicted = [
            r.predicted_first_audio - now
            for r in list(self._by_id.values())
            if r.predicted_first_audio is not None and math.isfinite(r.predicted_first_audio)
        ]
        return max(1.0, max(predicted, default=self._eta(self.num_waiting)))
