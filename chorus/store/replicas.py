"""Replicas' heartbeats in the shared database: who is serving, and how long each one's waiting queue is.

Every ``chorus serve`` writes its own row every few seconds (:mod:`chorus.server.fleet`); a row whose heartbeat is
older than the liveness window belongs to a replica that died or was partitioned away, and is left out of every
fleet-wide figure (and deleted after ``STALE_ROW_S``). A replica that stops cleanly deletes its row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, select

from chorus.store.sql import SqlStore
from chorus.store.tables import ReplicaRow

# Rows of replicas silent this long are deleted by whichever replica beats next.
STALE_ROW_S = 3600.0
# At most this many arrival times are published per replica (the oldest: they are the ones ahead of newcomers).
MAX_PUBLISHED_WAITING = 512


@dataclass(frozen=True, slots=True)
class ReplicaState:
    replica_id: str
    host: str
    started_at: float  # epoch seconds
    heartbeat_at: float  # epoch seconds, the writer's clock
    is_draining: bool
    max_slots: int
    num_running: int
    num_waiting: int
    newcomer_wait_s: float  # how long a newcomer would wait here for first audio, as this replica predicts
    waiting_since: tuple[float, ...]  # epoch arrival of each waiting request, oldest first (capped)


class ReplicaStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def beat(self, state: ReplicaState) -> None:
        """Insert or replace this replica's row."""
        since = json.dumps([round(t, 3) for t in sorted(state.waiting_since)[:MAX_PUBLISHED_WAITING]])
        with self.sql.session() as session:
            row = session.get(ReplicaRow, state.replica_id)
            if row is None:
                row = ReplicaRow(id=state.replica_id)
                session.add(row)
            row.host = state.host[:255]
            row.started_at = state.started_at
            row.heartbeat_at = state.heartbeat_at
            row.draining = state.is_draining
            row.max_slots = state.max_slots
            row.running = state.num_running
            row.waiting = state.num_waiting
            row.newcomer_wait_s = state.newcomer_wait_s
            row.waiting_since_json = since
            session.execute(delete(ReplicaRow).where(ReplicaRow.heartbeat_at < state.heartbeat_at - STALE_ROW_S))
            session.commit()

    def live(self, now: float, max_age_s: float) -> list[ReplicaState]:
        """Replicas whose heartbeat is at most ``max_age_s`` old, oldest replica first."""
        with self.sql.session() as session:
            rows = session.scalars(
                select(ReplicaRow).where(ReplicaRow.heartbeat_at >= now - max_age_s).order_by(ReplicaRow.started_at)
            ).all()
            return [_state(row) for row in rows]

    def remove(self, replica_id: str) -> None:
        with self.sql.session() as session:
            session.execute(delete(ReplicaRow).where(ReplicaRow.id == replica_id))
            session.commit()


def _state(row: ReplicaRow) -> ReplicaState:
    return ReplicaState(
        replica_id=row.id,
        host=row.host,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        is_draining=bool(row.draining),
        max_slots=row.max_slots,
        num_running=row.running,
        num_waiting=row.waiting,
        newcomer_wait_s=row.newcomer_wait_s,
        waiting_since=tuple(float(t) for t in json.loads(row.waiting_since_json)),
    )
