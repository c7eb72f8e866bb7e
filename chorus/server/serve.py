"""``chorus serve``'s process: uvicorn with a graceful drain on SIGTERM and an exit when the engine dies.

SIGTERM (or the first Ctrl-C): the server stops taking work at once (``/ready`` 503, new /v1 requests 503 with
Retry-After, job items given back to the queue) but keeps its port open, so requests in flight (streams
included) finish; when none is left, or after ``server.drain_timeout_s``, it shuts down and exits 0. A second
signal exits at once.

A dead engine (the watchdog found a hung step, or the loop failed) cannot be restarted in place: a thread stuck
in native code cannot be stopped from Python, and the backend's state is suspect. So the process exits with
code 70 (EX_SOFTWARE) after the failed requests' errors went out, and its supervisor (Kubernetes, systemd,
Docker's restart policy) starts a fresh one; /health answered 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from chorus.server.deps import ServerState

log = logging.getLogger(__name__)
EXIT_ENGINE_DEAD = 70
# After the engine died, the failed requests' error responses get this long to leave before the process exits.
DEAD_ENGINE_GRACE_S = 1.0


class ChorusServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self.drain_started: float | None = None
        self.dead_since: float | None = None

    def _state(self) -> ServerState | None:
        return getattr(self.app.state, "chorus", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = self._state()
        if self.drain_started is not None or state is None:  # a second signal, or not started yet: stop now
            super().handle_exit(sig, frame)
            return
        self.drain_started = time.monotonic()
        state.is_draining = True
        log.info("draining: new work is refused; %d request(s) in flight", state.metrics.active)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        state = self._state()
        if state is None:
            return False
        if self.drain_started is not None:
            await state.stop_jobs()
            idle = state.metrics.active == 0 and state.engine.num_running == 0 and state.engine.num_waiting == 0
            overdue = time.monotonic() - self.drain_started > self.drain_timeout_s
            if idle or overdue:
                log.info("drained (%s); shutting down", "idle" if idle else "drain_timeout_s reached")
                return True
        elif not state.engine.is_alive():
            now = time.monotonic()
            if self.dead_since is None:
                self.dead_since = now
                state.is_draining = True
                log.critical("the engine is dead; exiting with %d for a supervisor to restart chorus", EXIT_ENGINE_DEAD)
            if now - self.dead_since >= DEAD_ENGINE_GRACE_S:
                # Not uvicorn's shutdown: it would join the engine, whose worker may be stuck in native code for
                # ever. The audit rows of the failed requests are written first.
                await asyncio.to_thread(state.audit.close)
                logging.shutdown()
                os._exit(EXIT_ENGINE_DEAD)
        return False


def serve(app: FastAPI, *, host: str, port: int, log_level: str, drain_timeout_s: float) -> int:
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, log_config=None, timeout_graceful_shutdown=5
    )
    server = ChorusServer(config, app, drain_timeout_s)
    server.run()
    return 0
