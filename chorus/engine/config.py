"""The engine's settings (built from chorus.config by chorus.engine.builder) and what it reports of a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_slots: int
    queue_limit: int = 256
    mode: Literal["continuous", "static"] = "continuous"
    step_budget_s: float | None = 0.06
    max_frames: int | None = None  # autoregressive backends only
    crossfade_s: float = 0.01
    first_audio_target_s: float = 0.25
    # CPU backends: a stream's next audio is planned to leave the engine this long before its client would run
    # dry, for the trip to the client (encoding, the event loop, the network).
    delivery_margin_s: float = 0.1
    # CPU backends: a playing stream is kept up to this far ahead of its client besides (chorus.engine.request.Lead),
    # a cushion against a machine that slows for a moment.
    lead_s: float = 0.0
    # CPU backends, pipelined: nice value of the lanes' threads that advance streams already playing, while the
    # machine is otherwise quiet (chorus.engine.pipeline). 0 = the same priority as every other thread.
    playing_nice: int = 0
    # Admission control on CPU backends (chorus.engine.admission): the share of the workers' compute that
    # running streams may plan on (None = off, only max_slots applies).
    max_load: float | None = 1.0
    # A request predicted to wait longer than this (or than its own timeout) for its first audio is refused at
    # once (429) instead of waiting to fail. None = no limit but the request's timeout.
    max_queue_wait_s: float | None = None
    # A backend step still running after this long is a stall (a hung kernel, a deadlock in native code): the
    # watchdog fails every request with EngineStalledError and the engine is dead. None = no watchdog.
    stall_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a caller may learn about its request while it waits or runs."""

    request_id: str
    status: str
    queue_position: int | None  # 0 = next to be admitted; None once running or finished
    eta_s: float | None  # estimated seconds until its first audio
    arrival_time: float | None = None  # time.monotonic() when it arrived (while it waits)
