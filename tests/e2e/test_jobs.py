"""Batch jobs over a real server: submit, progress, audio per item, signed webhook to a receiver the test starts
(allow-listed loopback), cancel, refusals; and a server SIGKILLed mid-job whose work another server finishes,
every item exactly once, the webhook delivered."""

from __future__ import annotations

import io
import json
import signal
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chorus.store.jobs import JobStore
from chorus.store.settings import StoreConfig, open_store
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.receiver import Receiver, start_receiver
from tests.webhooks.test_signing import readme_snippet

LINES = ["The first line of the scene.", "A second, longer line, said with some feeling.", "And the last one."]


def verifier() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet(), "<README snippet>", "exec"), namespace)
    return namespace["verify_webhook"]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


def job_config(**jobs: Any) -> dict[str, Any]:
    return {
        "webhooks": {"allow_hosts": ["127.0.0.1"], "backoff_base_s": 0.2, "backoff_cap_s": 1.0},
        "jobs": {"lease_s": 3.0, **jobs},
    }


@pytest.fixture()
def job_server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, job_config())
    yield srv
    stop_server(srv)


def wait_job(url: str, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s: {job}")


def items(texts: list[str], fmt: str = "wav") -> list[dict[str, Any]]:
    return [{"input": t, "voice": "alloy", "response_format": fmt} for t in texts]


def test_a_job_runs_every_item_and_a_signed_webhook_reports_it(job_server: Server, receiver: Receiver) -> None:
    url = job_server.url
    body = {"items": items(LINES), "webhook": {"url": receiver.url}, "metadata": {"scene": 12}}
    created = httpx.post(f"{url}/v1/jobs", json=body, timeout=30)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["progress"]["total"] == 3
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_job(url, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["succeeded"] == 3 and done["progress"]["done"] == 3
    clips = []
    for item in done["items"]:
        audio = httpx.get(f"{url}{item['audio_url']}", timeout=30)
        clips.append(audio.content)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(audio.content)) as w:
            seconds = w.getnframes() / w.getframerate()
        assert seconds == pytest.approx(item["audio_s"], abs=0.05) and seconds > 0.5
    verified = httpx.post(
        f"{url}/v1/audio/verify", files={"audio": ("a.wav", max(clips, key=len), "audio/wav")}, timeout=30
    ).json()
    assert verified["watermarked"] is True  # a job's audio is marked like every output
    (delivery,) = receiver.wait_for(1)
    secret = httpx.get(f"{url}/v1/webhooks/secret", timeout=10).json()["secret"]
    assert verifier()(secret, delivery.headers, delivery.body)
    event = json.loads(delivery.body)
    assert event["type"] == "job.succeeded" and event["id"] == delivery.headers["webhook-id"]
    assert event["data"]["id"] == job["id"] and event["data"]["metadata"] == {"scene": 12}
    listed = httpx.get(f"{url}/v1/jobs", timeout=10).json()["data"]
    assert job["id"] in [j["id"] for j in listed]
    events = httpx.get(f"{url}/v1/webhooks/events", timeout=10).json()["data"]
    assert [(e["id"], e["status"]) for e in events] == [(event["id"], "delivered")]


def test_failed_deliveries_retry_then_dead_letter_and_an_admin_replays(tmp_path: Path, receiver: Receiver) -> None:
    srv = start_server(tmp_path, {**job_config(), "webhooks": {**job_config()["webhooks"], "max_attempts": 2}})
    try:
        receiver.statuses.extend([503, 500])  # both attempts fail
        job = httpx.post(
            f"{srv.url}/v1/jobs", json={"items": items(LINES[:1]), "webhook": {"url": receiver.url}}, timeout=30
        ).json()
        wait_job(srv.url, job["id"])
        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]  # one event, retried: dedupe on it
        deadline = time.monotonic() + 10
        while not (dead := httpx.get(f"{srv.url}/v1/webhooks/events?status=dead", timeout=10).json()["data"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert dead[0]["attempts"] == 2 and dead[0]["last_status"] == 500
        replayed = httpx.post(f"{srv.url}/v1/webhooks/events/{dead[0]['id']}/replay", timeout=10)
        assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
        third = receiver.wait_for(3)[2]
        assert third.headers["webhook-id"] == first.headers["webhook-id"]
        rotated = httpx.post(f"{srv.url}/v1/webhooks/secret/rotate", timeout=10).json()
        assert rotated["secret"].startswith("whsec_") and rotated["previous_valid_until"] is not None
    finally:
        stop_server(srv)


def test_refusals_name_the_problem(job_server: Server) -> None:
    url = job_server.url

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = httpx.post(f"{url}/v1/jobs", json=body, timeout=30)
        return r.status_code, r.json().get("error", {})

    status, error = post({"items": [*items(LINES[:1]), {"input": "x", "voice": "nobody"}]})
    assert status == 400 and error["param"] == "items[1].voice", error
    status, error = post({"items": []})
    assert status == 400 or status == 422
    status, error = post({"items": items(LINES[:1]), "webhook": {"url": "http://hooks.example.com/x"}})
    assert status == 400 and error["code"] == "scheme_not_allowed" and error["param"] == "webhook.url", error
    status, error = post({"items": items(LINES[:1]), "webhook": {"url": "https://169.254.169.254/latest"}})
    assert status == 400 and error["code"] == "blocked_address", error
    status, error = post({"items": items(["x" * 5000])})
    assert status == 400 and error["param"] == "items[0].input", error
    assert httpx.get(f"{url}/v1/jobs/job_nope", timeout=10).status_code == 404
    assert httpx.get(f"{url}/v1/jobs/job_nope/items/0/audio", timeout=10).status_code == 404


def test_cancel_stops_a_job(tmp_path: Path) -> None:
    srv = start_server(tmp_path, job_config())
    try:
        long_lines = [" ".join(LINES * 6)] * 6
        job = httpx.post(f"{srv.url}/v1/jobs", json={"items": items(long_lines)}, timeout=30).json()
        cancelled = httpx.post(f"{srv.url}/v1/jobs/{job['id']}/cancel", timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["progress"]["succeeded"] + cancelled.json()["progress"]["cancelled"] == 6
        again = httpx.post(f"{srv.url}/v1/jobs/{job['id']}/cancel", timeout=30)
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"
        time.sleep(1.0)
        assert httpx.get(f"{srv.url}/health", timeout=10).json()["active_slots"] == 0  # its running item stopped
    finally:
        stop_server(srv)


def test_a_server_killed_mid_job_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """SIGKILL while items run; a second server on the same store takes them over once their leases expire."""
    texts = [f"Line {n}: " + " ".join(LINES) for n in range(8)]
    first = start_server(tmp_path, job_config())
    job = httpx.post(
        f"{first.url}/v1/jobs", json={"items": items(texts), "webhook": {"url": receiver.url}}, timeout=30
    ).json()
    deadline = time.monotonic() + 60
    while True:
        progress = httpx.get(f"{first.url}/v1/jobs/{job['id']}", timeout=10).json()["progress"]
        if progress["succeeded"] >= 1 and progress["running"] >= 1:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    second = start_server(tmp_path, job_config())
    try:
        done = wait_job(second.url, job["id"])
        assert done["status"] == "succeeded" and done["progress"]["succeeded"] == len(texts)
        assert max(i["attempts"] for i in done["items"]) == 2  # the killed one's item ran again
        deliveries = receiver.wait_for(1)
        assert {json.loads(d.body)["data"]["id"] for d in deliveries} == {job["id"]}
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    finally:
        stop_server(second)
    # Exactly one result per item: one blob each, the one its row names.
    sql, blobs = open_store(StoreConfig(), tmp_path / "data")
    try:
        stored = sorted(p.name for p in (tmp_path / "data" / "blobs" / "jobs" / "default" / job["id"]).iterdir())
        named = sorted(Path(str(i.result_key)).name for i in JobStore(sql, blobs).items("default", job["id"]))
        assert stored == named and len(named) == len(texts)
    finally:
        sql.close()
