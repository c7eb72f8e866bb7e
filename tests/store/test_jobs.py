"""Batch jobs in the store (chorus.store.jobs, chorus.store.webhooks) on SQLite and PostgreSQL: leases, one result
per item even when a lease is lost, the job's end and its webhook event in one transaction, cancel, replay."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from chorus.store.jobs import JobConflictError, JobNotFoundError, JobStore, Lease
from chorus.store.tables import utcnow
from chorus.store.webhooks import WebhookStore
from tests.store.fixtures import Backend

ITEM = {"input": "Hello there.", "voice": "alloy", "response_format": "wav"}


@pytest.fixture
def stores(database: Backend) -> Iterator[tuple[JobStore, WebhookStore]]:
    sql, blobs = database.open()
    yield JobStore(sql, blobs), WebhookStore(sql)
    sql.close()


def claim(jobs: JobStore, owner: str = "w1", lease_s: float = 30.0, **kw: object) -> Lease:
    lease = jobs.claim(owner, lease_s, 3, **kw)  # type: ignore[arg-type]
    assert lease is not None
    return lease


def test_items_run_in_order_and_the_last_one_ends_the_job_with_one_event(
    stores: tuple[JobStore, WebhookStore],
) -> None:
    jobs, hooks = stores
    job = jobs.create(
        "default", [ITEM, {**ITEM, "input": "Second."}], metadata={"film": "x"}, webhook_url="https://h.example/w"
    )
    assert job.status == "queued" and job.item_count == 2
    first = claim(jobs)
    assert (first.job_id, first.n, first.attempt, first.spec) == (job.id, 0, 1, ITEM)
    assert jobs.get("default", job.id).status == "running"
    second = claim(jobs, "w2")
    assert second.n == 1
    assert jobs.claim("w3", 30.0, 3) is None  # nothing left
    assert jobs.succeed(first, b"RIFF0", extension="wav", content_type="audio/wav", audio_s=1.0)
    assert hooks.list("default") == []  # the job has not ended
    assert jobs.fail(second, "voice_not_found", "no voice")
    ended = jobs.get("default", job.id)
    assert ended.status == "failed" and ended.counts == {"succeeded": 1, "failed": 1}
    assert ended.finished_at is not None
    events = hooks.list("default")
    assert len(events) == 1 and events[0].type == "job.failed" and events[0].status == "pending"
    payload = json.loads(events[0].payload)
    assert payload["id"] == events[0].id and payload["type"] == "job.failed"
    assert payload["data"]["id"] == job.id and payload["data"]["items"] == {"total": 2, "succeeded": 1, "failed": 1}
    assert payload["data"]["metadata"] == {"film": "x"}
    item, audio = jobs.result("default", job.id, 0)
    assert audio == b"RIFF0" and item.content_type == "audio/wav"
    with pytest.raises(JobNotFoundError):
        jobs.result("default", job.id, 1)  # failed: no audio
    with pytest.raises(JobNotFoundError):
        jobs.get("acme", job.id)  # another tenant's job reads as unknown


def test_a_job_without_a_webhook_writes_no_event(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, hooks = stores
    job = jobs.create("default", [ITEM])
    assert jobs.succeed(claim(jobs), b"x", extension="wav", content_type="audio/wav", audio_s=0.5)
    assert jobs.get("default", job.id).status == "succeeded"
    assert hooks.list(None) == []


def test_an_expired_lease_is_taken_over_and_the_old_worker_cannot_record_a_result(
    stores: tuple[JobStore, WebhookStore],
) -> None:
    jobs, hooks = stores
    job = jobs.create("default", [ITEM], webhook_url="https://h.example/w")
    dead = claim(jobs, "killed", lease_s=5.0)
    assert jobs.claim("w2", 30.0, 3) is None  # leased
    later = utcnow() + timedelta(seconds=6)
    alive = claim(jobs, "w2", now=later)
    assert alive.n == dead.n and alive.attempt == 2 and alive.token != dead.token
    assert not jobs.renew(dead, 30.0)
    # The old worker finishes anyway: its result is not recorded and its blob is removed.
    assert not jobs.succeed(dead, b"OLD", extension="wav", content_type="audio/wav", audio_s=1.0)
    assert jobs.succeed(alive, b"NEW", extension="wav", content_type="audio/wav", audio_s=1.0)
    item, audio = jobs.result("default", job.id, 0)
    assert audio == b"NEW" and item.attempts == 2
    assert item.result_key == f"jobs/default/{job.id}/0-{alive.token}.wav"
    assert not jobs.blobs.exists(f"jobs/default/{job.id}/0-{dead.token}.wav")
    assert len(hooks.list("default")) == 1  # one end, one event


def test_an_item_that_kills_its_workers_fails_after_max_attempts(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, _ = stores
    job = jobs.create("default", [ITEM])
    now = utcnow()
    for attempt in range(3):
        now += timedelta(seconds=31)
        assert claim(jobs, f"w{attempt}", now=now).attempt == attempt + 1
    assert jobs.claim("w9", 30.0, 3, now=now + timedelta(seconds=31)) is None
    ended = jobs.get("default", job.id)
    assert ended.status == "failed"
    assert jobs.item("default", job.id, 0).error == {
        "code": "worker_lost",
        "message": "its worker stopped 3 times while on it",
    }


def test_released_items_go_back_without_counting_a_try(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, _ = stores
    jobs.create("default", [ITEM, ITEM])
    a, b = claim(jobs, "draining"), claim(jobs, "draining")
    jobs.release(a)
    assert jobs.release_owner("draining") == 1  # b
    again = claim(jobs, "w2")
    assert again.attempt == 1 and {again.n, claim(jobs, "w2").n} == {a.n, b.n}


def test_cancel_ends_the_job_and_stops_its_running_item(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, hooks = stores
    job = jobs.create("default", [ITEM, ITEM, ITEM], webhook_url="https://h.example/w")
    running = claim(jobs)
    cancelled = jobs.cancel("default", job.id)
    assert cancelled.status == "cancelled" and cancelled.counts == {"cancelled": 3}
    assert not jobs.renew(running, 30.0)  # its worker stops
    assert not jobs.succeed(running, b"late", extension="wav", content_type="audio/wav", audio_s=1.0)
    assert jobs.claim("w2", 30.0, 3) is None
    assert [e.type for e in hooks.list("default")] == ["job.cancelled"]
    with pytest.raises(JobConflictError):
        jobs.cancel("default", job.id)
    with pytest.raises(JobNotFoundError):
        jobs.cancel("acme", job.id)


def test_two_workers_racing_never_take_one_item_twice(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, _ = stores
    jobs.create("default", [ITEM] * 12)
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        while (lease := jobs.claim(owner, 30.0, 3)) is not None:
            with lock:
                taken.append((lease.job_id, lease.n))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(n for _, n in taken) == list(range(12))


def test_list_pages_newest_first(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, _ = stores
    ids = [jobs.create("default", [ITEM]).id for _ in range(5)]
    first = jobs.list("default", limit=2)
    assert [j.id for j in first] == ids[:-3:-1]
    rest = jobs.list("default", limit=10, before=first[-1].id)
    assert [j.id for j in rest] == ids[-3::-1]
    assert jobs.list("acme") == []


def test_outbox_leases_retries_dead_letters_and_replay(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, hooks = stores
    jobs.create("default", [ITEM], webhook_url="https://h.example/w")
    assert jobs.succeed(claim(jobs), b"x", extension="wav", content_type="audio/wav", audio_s=0.5)
    event = hooks.claim_due(60.0)
    assert event is not None and event.attempts == 0
    assert hooks.claim_due(60.0) is None  # leased
    retry_at = utcnow() + timedelta(seconds=30)
    assert hooks.record(event, delivered=False, status=503, error="http_5xx", retry_at=retry_at)
    assert hooks.claim_due(60.0) is None  # not due yet
    again = hooks.claim_due(60.0, now=retry_at + timedelta(seconds=1))
    assert again is not None and again.attempts == 1
    assert not hooks.record(event, delivered=True, status=200, error=None, retry_at=None)  # an old lease
    assert hooks.record(again, delivered=False, status=None, error="connect_timeout", retry_at=None)
    (dead,) = hooks.list("default", status="dead")
    assert dead.attempts == 2 and dead.last_error == "connect_timeout"
    replayed = hooks.replay("default", dead.id)
    assert replayed.status == "pending" and replayed.attempts == 0
    fresh = hooks.claim_due(60.0)
    assert fresh is not None and fresh.id == dead.id
    assert hooks.record(fresh, delivered=True, status=204, error=None, retry_at=None)
    assert hooks.list("default")[0].status == "delivered"
    assert hooks.counts_by_status() == {"delivered": 1}


def test_a_dispatcher_that_died_leaves_its_event_to_be_sent_again(stores: tuple[JobStore, WebhookStore]) -> None:
    jobs, hooks = stores
    jobs.create("default", [ITEM], webhook_url="https://h.example/w")
    assert jobs.succeed(claim(jobs), b"x", extension="wav", content_type="audio/wav", audio_s=0.5)
    assert hooks.claim_due(5.0) is not None  # then killed
    again = hooks.claim_due(60.0, now=utcnow() + timedelta(seconds=6))
    assert again is not None and again.attempts == 0


def test_secret_rotation_keeps_the_previous_secret_signing_for_the_overlap(
    stores: tuple[JobStore, WebhookStore],
) -> None:
    _, hooks = stores
    first = hooks.secret("default").secret
    assert first.startswith("whsec_") and hooks.secret("default").secret == first
    rotated = hooks.rotate("default", overlap_s=3600)
    assert rotated.secret != first and rotated.previous_secret == first
    assert hooks.signing_secrets("default") == [rotated.secret, first]
    later = utcnow() + timedelta(seconds=3601)
    assert hooks.signing_secrets("default", now=later) == [rotated.secret]
    assert hooks.secret("acme").secret not in (first, rotated.secret)
