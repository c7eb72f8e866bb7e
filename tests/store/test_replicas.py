"""Replicas' heartbeat rows on SQLite and PostgreSQL: upsert, liveness window, clean removal, stale rows pruned."""

from __future__ import annotations

from dataclasses import replace

from chorus.store.replicas import MAX_PUBLISHED_WAITING, STALE_ROW_S, ReplicaState, ReplicaStore
from tests.store.fixtures import Backend


def state(replica_id: str, at: float, **changes: object) -> ReplicaState:
    base = ReplicaState(replica_id, "host-1", at - 60, at, False, 16, 3, 2, 1.5, (at - 2.0, at - 1.0))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_heartbeats_upsert_expire_and_leave(database: Backend) -> None:
    sql, _ = database.open()
    store = ReplicaStore(sql)
    now = 1_000_000.0
    store.beat(state("rep_a", now - 1))
    store.beat(state("rep_a", now, num_running=5))  # the same row, updated
    store.beat(state("rep_b", now - 10, is_draining=True))
    live = store.live(now, max_age_s=6)
    assert [r.replica_id for r in live] == ["rep_a"] and live[0].num_running == 5
    assert live[0].waiting_since == (now - 2.0, now - 1.0) and live[0].newcomer_wait_s == 1.5
    both = store.live(now, max_age_s=20)  # the longest-running replica first
    assert [(r.replica_id, r.is_draining) for r in both] == [("rep_b", True), ("rep_a", False)]
    store.remove("rep_a")
    assert [r.replica_id for r in store.live(now, max_age_s=20)] == ["rep_b"]
    # A row silent for over STALE_ROW_S is deleted by the next replica's beat.
    store.beat(state("rep_c", now + STALE_ROW_S))
    assert [r.replica_id for r in store.live(now + STALE_ROW_S, max_age_s=10 * STALE_ROW_S)] == ["rep_c"]
    sql.close()


def test_published_waiting_list_is_capped_at_the_oldest(database: Backend) -> None:
    sql, _ = database.open()
    store = ReplicaStore(sql)
    arrivals = tuple(float(t) for t in range(MAX_PUBLISHED_WAITING + 50, 0, -1))
    store.beat(state("rep_a", 10_000.0, num_waiting=len(arrivals), waiting_since=arrivals))
    (row,) = store.live(10_000.0, max_age_s=5)
    assert row.num_waiting == len(arrivals) and row.waiting_since == tuple(range(1, MAX_PUBLISHED_WAITING + 1))
    sql.close()
