"""Operations over a real server: Prometheus /metrics, JSON logs with request ids (and no text), the SIGTERM
drain (in-flight streams finish, new work 503 + Retry-After, exit 0), the watchdog (a hung step fails its
requests, the process exits 70 and a restarted one serves), the idle canary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus.server.malloc import glibc
from tests.e2e.conftest import LONG_TEXT, Server, start_server, stop_server, wait_for

pytestmark = pytest.mark.e2e
HANGING_SERVER = [sys.executable, "-m", "tests.e2e.hanging_server"]  # run from the repository root, like pytest
SECRET_TEXT = "The password is swordfish and nobody may read it in a log."


def speech(text: str, **extra: object) -> dict[str, object]:
    return {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm", **extra}


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def log_lines(server: Server) -> list[dict[str, object]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_metrics_and_json_logs(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"server": {"canary_interval_s": 0, "malloc_trim_interval_s": 0.2}})
    try:
        r = httpx.post(
            f"{srv.url}/v1/audio/speech", json=speech(SECRET_TEXT), headers={"x-request-id": "ops-test-1"}, timeout=60
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "ops-test-1"
        httpx.post(f"{srv.url}/v1/audio/speech", json=speech(""), timeout=10)  # a 400
        found = samples(srv.url)
        assert value(found, "chorus_http_requests_total", route="/v1/audio/speech", status="200", tenant="default") == 1
        refused = [
            labels for name, labels in found if name == "chorus_http_requests_total" and ("status", "400") in labels
        ]
        assert len(refused) == 1 and ("route", "/v1/audio/speech") in refused[0], refused
        assert value(found, "chorus_ttfa_seconds_count") == 1
        assert value(found, "chorus_step_seconds_count") >= 1
        assert value(found, "chorus_rtf_count") == 1
        assert value(found, "chorus_chunk_gap_seconds_count") >= 1
        assert value(found, "chorus_underruns_total") == 0
        assert value(found, "chorus_audio_seconds_total") > 1.0
        assert value(found, "chorus_queue_depth") == 0 and value(found, "chorus_running_slots") == 0
        assert [v for (name, _), v in found.items() if name == "chorus_model_loaded"] == [1.0]
        assert value(found, "chorus_ready") == 1 and value(found, "chorus_draining") == 0
        assert value(found, "chorus_jobs", state="queued") == 0
        assert value(found, "chorus_webhook_events", state="dead") == 0
        assert value(found, "chorus_last_good_synthesis_timestamp_seconds") > time.time() - 60
        assert any(name == "chorus_build_info" for name, _ in found)
        # Admission's reading of the CPU: the bundled voice runs on CPU, so it plans on some capacity.
        assert value(found, "chorus_admission_cores", kind="capacity") > 0
        assert value(found, "chorus_admission_cores", kind="other_processes") >= 0
        assert value(found, "chorus_admission_cores", kind="stolen") >= 0
        if glibc() is not None:  # malloc_trim ran on its interval (whether it released anything is glibc's say)
            trims = wait_for(
                lambda: (
                    sum(v for (name, _), v in samples(srv.url).items() if name == "chorus_malloc_trims_total") or None
                ),
                "a malloc_trim",
                timeout=10,
            )
            assert trims >= 1
        lines = log_lines(srv)
        assert lines, srv.log()[:2000]  # every line is JSON
        access = [line for line in lines if line.get("request_id") == "ops-test-1" and line.get("route")]
        assert access and access[0]["status"] == 200 and access[0]["tenant"] == "default"
        assert "swordfish" not in srv.log()  # no input text unless log.include_text
    finally:
        stop_server(srv)


def test_sigterm_drains_in_flight_streams_refuses_new_work_and_exits_0(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"server": {"drain_timeout_s": 60, "canary_interval_s": 0}})
    text = LONG_TEXT[:900]
    received = bytearray()
    done = threading.Event()
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            with httpx.stream("POST", f"{srv.url}/v1/audio/speech", json=speech(text, seed=7), timeout=120) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    received.extend(chunk)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=stream)
    worker.start()
    deadline = time.monotonic() + 30
    while len(received) < 24_000 * 2:  # a second of audio arrived: the stream is under way
        assert time.monotonic() < deadline and not done.is_set(), errors
        time.sleep(0.02)
    srv.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{srv.url}/ready", timeout=10)
    assert ready.status_code == 503 and "server is draining" in ready.json()["reasons"]
    refused = httpx.post(f"{srv.url}/v1/audio/speech", json=speech("Too late."), timeout=10)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "draining"
    assert not done.is_set()  # still streaming while the server drains
    worker.join(120)
    assert not errors, errors
    assert srv.process.wait(60) == 0
    # The whole text was spoken: the same audio as the same request (seeded) on an undisturbed server.
    alone = start_server(tmp_path, {"server": {"canary_interval_s": 0}})
    try:
        full = httpx.post(f"{alone.url}/v1/audio/speech", json=speech(text, seed=7), timeout=120).content
    finally:
        stop_server(alone)
    assert len(received) == len(full)
    assert "drained (idle)" in srv.log()


def test_a_hung_step_is_detected_and_a_restarted_server_recovers(tmp_path: Path) -> None:
    config = {"worker": {"stall_timeout_s": 2}, "server": {"canary_interval_s": 0}}
    srv = start_server(tmp_path, config, launcher=HANGING_SERVER)
    started = time.monotonic()
    r = httpx.post(
        f"{srv.url}/v1/audio/speech", json=speech("This one hangs."), headers={"x-request-id": "hang-1"}, timeout=60
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_stalled", r.text
    assert time.monotonic() - started < 10
    try:
        code = srv.process.wait(30)
    except subprocess.TimeoutExpired:
        srv.process.kill()
        raise
    assert code == 70, srv.log()[-3000:]
    assert "engine stalled" in srv.log()
    # The supervisor's part: a fresh process on the same data serves again.
    again = start_server(tmp_path, config, launcher=HANGING_SERVER)
    try:
        ok = httpx.post(f"{again.url}/v1/audio/speech", json=speech("Back again."), timeout=60)
        assert ok.status_code == 200 and len(ok.content) > 10_000
        assert httpx.get(f"{again.url}/health", timeout=10).status_code == 200
    finally:
        stop_server(again)


def test_the_idle_canary_keeps_last_good_synthesis_fresh(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"server": {"canary_interval_s": 1}})
    try:
        began = time.time()
        deadline = time.monotonic() + 20
        while True:
            last = value(samples(srv.url), "chorus_last_good_synthesis_timestamp_seconds")
            if last >= began:
                break
            assert time.monotonic() < deadline, "no canary synthesis"
            time.sleep(0.3)
        found = samples(srv.url)
        assert value(found, "chorus_canary_failures_total") == 0
        assert ("chorus_http_requests_total", (("route", "/v1/audio/speech"),)) not in found  # no request made it
    finally:
        stop_server(srv)
