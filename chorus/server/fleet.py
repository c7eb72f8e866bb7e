"""The fleet: every replica sharing one database publishes its queue, so callers learn where they stand fleet-wide.

Each ``chorus serve`` writes a heartbeat row (:mod:`chorus.store.replicas`) every ``server.fleet_heartbeat_s``: its
slots, its waiting requests' arrival times and the wait a newcomer would face there. From the rows of live replicas
(a heartbeat younger than ``LIVE_BEATS`` beats) it answers two questions:

- **Where does a waiting request stand?** ``fleet_position`` = the requests waiting on *any* live replica that
  arrived before it: its place in its own replica's queue plus the earlier arrivals published by the others (any
  priority; as fresh as their last heartbeat). Behind a load balancer a request waits only for its own replica's
  slots, so ``queue_position``/``eta_s`` stay the replica's own figures; ``fleet_position`` says how much of the
  fleet's backlog arrived first, which is what a caller comparing "how busy is the service" needs.
- **When should a refused caller come back?** ``Retry-After`` = the soonest any live, non-draining replica expects
  to give a newcomer a slot (this replica's own prediction included), at least 1 s. That is exact for a load
  balancer that sends work where there is room (least-outstanding-requests, Ray Serve, KEDA-scaled pools with
  readiness gates: a full replica turns its ``/ready`` 503); behind a blind round-robin it is optimistic by the
  chance of landing on a full replica again, which the client's normal 429 retry covers.

A replica that stops cleanly deletes its row; a killed one drops out after ``LIVE_BEATS`` beats. Clocks are
epoch seconds from each writer: replicas are assumed NTP-synchronised to well under one beat.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from chorus.engine.client import AsyncEngine
from chorus.engine.config import RequestInfo
from chorus.store.replicas import ReplicaState, ReplicaStore

log = logging.getLogger(__name__)

LIVE_BEATS = 3  # a replica whose last heartbeat is older than this many beats is taken for dead
MIN_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the fleet looked like at the latest heartbeat: this replica's own row first."""

    replicas: tuple[ReplicaState, ...]
    read_at: float  # epoch seconds

    @property
    def num_waiting(self) -> int:
        return sum(r.num_waiting for r in self.replicas)

    @property
    def num_running(self) -> int:
        return sum(r.num_running for r in self.replicas)


class Fleet:
    def __init__(
        self,
        store: ReplicaStore,
        engine: AsyncEngine,
        *,
        beat_s: float,
        is_draining: Callable[[], bool],
        replica_id: str | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.beat_s = beat_s
        self.is_draining = is_draining
        self.replica_id = replica_id or f"rep_{uuid.uuid4().hex[:16]}"
        self.host = socket.gethostname()
        self.started_at = time.time()
        self._view = FleetView((self.local_state(),), self.started_at)

    # -- publishing ------------------------------------------------------------------------------------------

    def local_state(self) -> ReplicaState:
        engine = self.engine.engine
        now_wall, now_mono = time.time(), time.monotonic()
        arrivals = engine.waiting_arrivals()
        return ReplicaState(
            replica_id=self.replica_id,
            host=self.host,
            started_at=self.started_at,
            heartbeat_at=now_wall,
            is_draining=self.is_draining(),
            max_slots=engine.config.max_slots,
            num_running=engine.num_running,
            num_waiting=len(arrivals),
            newcomer_wait_s=engine.newcomer_wait_s(),
            waiting_since=tuple(now_wall - (now_mono - t) for t in arrivals),
        )

    def beat(self) -> FleetView:
        """Publish this replica's state and read everyone's (blocking: call from a thread)."""
        mine = self.local_state()
        self.store.beat(mine)
        others = [
            r for r in self.store.live(mine.heartbeat_at, LIVE_BEATS * self.beat_s) if r.replica_id != self.replica_id
        ]
        self._view = FleetView((mine, *others), mine.heartbeat_at)
        return self._view

    async def run(self) -> None:
        """Heartbeat until cancelled, then delete this replica's row (a clean stop leaves the fleet at once)."""
        try:
            while True:
                try:
                    await asyncio.to_thread(self.beat)
                except Exception as e:  # a database hiccup must not stop the server; the next beat retries
                    log.warning("fleet heartbeat failed: %s", e)
                await asyncio.sleep(self.beat_s)
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self.store.remove, self.replica_id))
            except Exception as e:
                log.warning("could not remove this replica's heartbeat row: %s", e)

    # -- reading ---------------------------------------------------------------------------------------------

    @property
    def view(self) -> FleetView:
        """The fleet as of the latest heartbeat, this replica's row refreshed to now."""
        return FleetView((self.local_state(), *self._view.replicas[1:]), self._view.read_at)

    def position(self, info: RequestInfo) -> int | None:
        """Requests waiting anywhere in the fleet that arrived before this waiting one (None once it runs)."""
        if info.queue_position is None or info.arrival_time is None:
            return None
        arrived = time.time() - (time.monotonic() - info.arrival_time)
        ahead_elsewhere = sum(sum(1 for t in r.waiting_since if t < arrived) for r in self._view.replicas[1:])
        return info.queue_position + ahead_elsewhere

    def retry_after_s(self, local_s: float) -> float:
        """The soonest any live, non-draining replica expects to take a newcomer (``local_s`` is this one's)."""
        waits = [local_s, *(r.newcomer_wait_s for r in self._view.replicas[1:] if not r.is_draining)]
        return max(MIN_RETRY_AFTER_S, min(waits))

    def describe(self) -> dict[str, object]:
        """``GET /v1/fleet``: every live replica's slots and queue, and the totals."""
        view = self.view
        return {
            "object": "fleet",
            "replica_id": self.replica_id,
            "num_replicas": len(view.replicas),
            "num_running": view.num_running,
            "num_waiting": view.num_waiting,
            "retry_after_s": round(self.retry_after_s(view.replicas[0].newcomer_wait_s), 3),
            "replicas": [
                {
                    "id": r.replica_id,
                    "host": r.host,
                    "is_self": r.replica_id == self.replica_id,
                    "draining": r.is_draining,
                    "max_slots": r.max_slots,
                    "running": r.num_running,
                    "waiting": r.num_waiting,
                    "newcomer_wait_s": round(r.newcomer_wait_s, 3),
                    "heartbeat_age_s": round(max(0.0, view.read_at - r.heartbeat_at), 3),
                }
                for r in view.replicas
            ],
        }
