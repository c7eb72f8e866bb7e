"""Two `chorus serve` replicas on one real PostgreSQL + S3 (SeaweedFS): they share voices, consents and jobs; a
replica SIGKILLed mid-stream loses only its own streams, and its job items finish on the other; waiting callers
see where they stand across both queues, and a full replica's 429 points at the fleet's free room."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chorus.store.jobs import JobStore
from chorus.store.settings import StoreConfig, open_store
from chorus.store.tables import JobItemRow
from tests.e2e.conftest import Server, start_server, stop_server, wait_for
from tests.e2e.consent_flow import create_voice, give_consent, reference
from tests.e2e.test_jobs import LINES, items, wait_job
from tests.store.fixtures import make_backend

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BEAT_S = 0.5
LONG_TEXT = " ".join(f"Sentence number {n} of a long answer, read out slowly and with care." for n in range(40))


@dataclass
class Stream:
    """A streamed request read to its end in a thread: bytes received, and how it ended."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    received: int = 0
    error: str | None = None
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST", f"{self.url}/v1/audio/speech", json=self.body, headers=self.headers, timeout=120
            ) as r:
                self.status = r.status_code
                for chunk in r.iter_raw():
                    self.received += len(chunk)
                    self.started.set()
                    if self.stop.is_set():
                        break
        except httpx.HTTPError as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.started.set()
            self.done.set()


def open_stream(url: str, text: str = LONG_TEXT, request_id: str | None = None) -> Stream:
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
    stream = Stream(url, body, {"X-Request-Id": request_id} if request_id else {})
    threading.Thread(target=stream.run, daemon=True).start()
    return stream


def fleet(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/v1/fleet", timeout=10).json()
    return body


@pytest.fixture()
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A fresh PostgreSQL database and S3 prefix, as the `store:` section both replicas are given."""
    return make_backend("postgres+s3", request, tmp_path / "unused").config_args


@pytest.fixture()
def replicas(tmp_path: Path, shared_store: dict[str, Any]) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(name: str, **overrides: Any) -> Server:
        config: dict[str, Any] = {
            "store": shared_store,
            "data_dir": str(tmp_path / name),
            "jobs": {"lease_s": 3.0},
            "server": {"fleet_heartbeat_s": BEAT_S, "canary_interval_s": 0, **overrides.pop("server", {})},
            **overrides,
        }
        server = start_server(tmp_path, config)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_server(server)


def test_replicas_share_voices_consents_and_jobs_and_a_kill_loses_only_its_streams(
    replicas: Callable[..., Server], shared_store: dict[str, Any], tmp_path: Path
) -> None:
    a, b = replicas("a"), replicas("b")
    wait_for(lambda: fleet(b.url)["num_replicas"] == 2, "both replicas in the fleet", 10)

    # A consent and a cloned voice made on one replica are there on the other, and it speaks with the voice.
    consent = give_consent(a.url)
    made = create_voice(a.url, "sally", reference(), consent)
    assert made.status_code == 201, made.text
    voice = made.json()["id"]
    assert httpx.get(f"{b.url}/v1/audio/voice_consents/{consent}", timeout=10).status_code == 200
    assert httpx.get(f"{b.url}/v1/audio/voices/{voice}", timeout=10).json()["id"] == voice
    spoken = httpx.post(
        f"{b.url}/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello from the other replica.", "voice": voice, "response_format": "pcm"},
        timeout=60,
    )
    assert spoken.status_code == 200 and len(spoken.content) > 24_000  # over half a second of 24 kHz s16le

    # A job submitted to A; both replicas take its items. Kill A while it holds one and streams to a caller.
    texts = [f"Line {n}: " + " ".join(LINES) for n in range(8)]
    job = httpx.post(f"{a.url}/v1/jobs", json={"items": items(texts)}, timeout=30).json()
    sql, blobs = open_store(StoreConfig(**shared_store), tmp_path / "probe")
    try:

        def a_holds_an_item() -> bool:
            with sql.session() as session:
                owners = session.scalars(
                    select(JobItemRow.lease_owner).where(JobItemRow.job_id == job["id"], JobItemRow.status == "running")
                ).all()
            return any(o is not None and f":{a.process.pid}:" in o for o in owners)

        wait_for(a_holds_an_item, "replica A running one of the job's items", 60)
        on_a, on_b = open_stream(a.url), open_stream(b.url)
        assert on_a.started.wait(60) and on_b.started.wait(60)
        assert on_a.status == 200 and on_b.status == 200
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)

        assert on_a.done.wait(30) and on_a.error is not None  # A's caller sees its stream cut short
        assert on_b.done.wait(120) and on_b.error is None and on_b.status == 200
        assert on_b.received > 40 * 2 * 24_000  # B's stream ran to its end: well over 40 s of 24 kHz s16le audio

        done = wait_job(b.url, job["id"], timeout_s=120)
        assert done["status"] == "succeeded" and done["progress"]["succeeded"] == len(texts), done
        assert max(i["attempts"] for i in done["items"]) == 2  # A's item ran again on B, once its lease expired
        keys = [i.result_key for i in JobStore(sql, blobs).items("default", job["id"])]
        assert len(set(keys)) == len(texts) and all(blobs.exists(str(k)) for k in keys)  # one result per item
    finally:
        sql.close()
    view = wait_for(lambda: (f := fleet(b.url))["num_replicas"] == 1 and f, "the killed replica leaving the fleet", 10)
    assert view["replicas"][0]["is_self"]


def test_queue_positions_and_retry_after_span_the_fleet(replicas: Callable[..., Server]) -> None:
    """One slot and one waiting place per replica: a caller waiting on A counts B's earlier waiter; a caller refused
    by a full A while B has room is told to come back in 1 s, not after A's own backlog."""
    settings = {"worker": {"max_slots": 1}, "server": {"queue_limit": 1, "max_queue_wait_s": 600}}
    a, b = replicas("a", **settings), replicas("b", **settings)
    wait_for(lambda: fleet(a.url)["num_replicas"] == 2, "both replicas in the fleet", 10)
    streams = [open_stream(a.url), open_stream(b.url)]  # one running on each
    try:
        assert all(s.started.wait(60) and s.status == 200 for s in streams)
        streams.append(open_stream(b.url, request_id="req-b-waiting"))
        wait_for(
            lambda: httpx.get(f"{b.url}/v1/requests/req-b-waiting", timeout=10).status_code == 200, "B's waiter", 10
        )
        time.sleep(0.05)
        streams.append(open_stream(a.url, request_id="req-a-waiting"))

        def standing() -> dict[str, Any] | None:
            r = httpx.get(f"{a.url}/v1/requests/req-a-waiting", timeout=10)
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 and body.get("fleet_waiting") == 2 else None

        status = wait_for(standing, "A to see both waiting requests", 15)
        assert status["status"] == "waiting" and status["queue_position"] == 0
        assert status["fleet_position"] == 1 and status["fleet_replicas"] == 2  # B's waiter arrived first

        # Both full: A refuses with a wait from the fleet's state (at least 1 s).
        refused = httpx.post(f"{a.url}/v1/audio/speech", json=streams[0].body, timeout=30)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        # B empties; A, still full with a long backlog, sends its next refused caller to the fleet's free room.
        on_b = streams[1:3]
        for s in on_b:
            s.stop.set()
        wait_for(lambda: all(s.done.is_set() for s in on_b), "B's callers to leave", 30)

        def b_idle() -> dict[str, Any] | None:
            view = fleet(a.url)
            peer = next(r for r in view["replicas"] if not r["is_self"])
            return view if peer["running"] == 0 and peer["waiting"] == 0 else None

        view = wait_for(b_idle, "A to see B idle", 15)
        own = next(r for r in view["replicas"] if r["is_self"])
        assert own["newcomer_wait_s"] > 2  # A alone would say: come back after a long wait
        refused = httpx.post(f"{a.url}/v1/audio/speech", json=streams[0].body, timeout=30)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.headers
    finally:
        for s in streams:
            s.stop.set()
