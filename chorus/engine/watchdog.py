"""The engine's watchdog: notices a backend step that has run past a bound (a hung kernel, a native deadlock).

No thread stuck in native code can be stopped from Python, so a stall is not recovered in place: the engine
fails every request and is dead, and ``chorus serve`` exits for its supervisor to restart it (chorus.server.serve).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

from chorus.errors import EngineStalledError

log = logging.getLogger(__name__)


class StepClock:
    """The backend steps running now and when each began (thread-safe: every worker times its own step)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}
        self._tokens = itertools.count()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        token = next(self._tokens)
        with self._lock:
            self._running[token] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(token, None)

    def stalled_for_s(self, now: float | None = None) -> float:
        """How long the oldest running step has been running (0 when none runs)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            oldest = min(self._running.values(), default=now)
        return now - oldest


def watch(
    clock: StepClock, limit_s: float, ended: Callable[[], bool], stall: Callable[[EngineStalledError], None]
) -> None:
    """The watchdog thread: until ``ended()``, check the oldest step every quarter of the limit (at most every
    second); past the limit, hand ``stall`` the error once and stop."""
    while not ended():
        time.sleep(min(1.0, limit_s / 4))
        stalled = clock.stalled_for_s()
        if stalled > limit_s:
            error = EngineStalledError(f"a synthesis step has run for {stalled:.0f} s (limit {limit_s:g} s)")
            log.critical("engine stalled: %s; failing every request", error.message)
            stall(error)
            return
