"""Fine-tuning over a real `chorus serve` on a tiny Qwen3 Base model and a real `chorus worker --queue finetune`:
dataset → consent → fine-tune (preempted by SIGTERM mid-way, resumed by a second worker) → a voice that speaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")
pytest.importorskip("peft", reason="the qwen extra is not installed (scripts/install_qwen.sh)")

from chorus.testing.qwen3_tiny import build_tiny_model
from tests.e2e.conftest import Server, start_server, stop_server, wait_for
from tests.e2e.consent_flow import give_consent
from tests.e2e.test_datasets import dataset
from tests.finetune.test_dataset_archive import zipped
from tests.voices.speech import PARAGRAPH

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STEPS = 30


@dataclass
class Site:
    server: Server
    config: Path
    root: Path

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", timeout=120, **kwargs)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.server.url}{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def worker(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
        log = (self.root / "worker.log").open("ab")
        command = [
            sys.executable,
            "-m",
            "chorus.cli",
            "worker",
            "--queue",
            "finetune",
            "--once",
            "-c",
            str(self.config),
        ]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def new_dataset(self, voice: str = "slt") -> str:
        consent = give_consent(self.server.url, voice=voice)
        archive = zipped(dataset(PARAGRAPH[:8], voice))
        files = {"archive": ("ds.zip", archive, "application/zip")}
        made = self.post("/v1/datasets", data={"name": f"{voice}-lines", "consent": consent}, files=files)
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("fine-tunes")
    model = build_tiny_model(root / "model", kind="base", seed=1)
    config = {
        "model": {"name": "qwen3", "local_path": str(model), "max_adapters": 2},
        "worker": {"max_frames": 30},
        "server": {"canary_interval_s": 0},
        "finetune": {"min_dataset_minutes": 0.1, "checkpoint_every": 5, "lease_s": 5},
    }
    server = start_server(root, config)
    (path,) = root.glob("chorus-*.yaml")
    yield Site(server, path, root)
    stop_server(server)


def events(site: Site, job: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = site.get(f"/v1/fine_tunes/{job}/events")["data"]
    return data


def test_a_preempted_fine_tune_resumes_and_its_voice_speaks(site: Site) -> None:
    ds = site.new_dataset()
    body = {"dataset": ds, "name": "slt-tuned", "steps": STEPS, "rank": 2, "alpha": 4, "batch_size": 2}
    made = site.post("/v1/fine_tunes", json=body)
    assert made.status_code == 201, made.text
    job = made.json()
    assert job["status"] == "queued" and job["id"].startswith("ft_") and job["backend"] == "qwen3"
    # The dataset's consent can make one voice: a second fine-tune of it is refused at once, not after training.
    again = site.post("/v1/fine_tunes", json={**body, "name": "other"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "dataset_in_use", again.text
    busy = httpx.delete(f"{site.server.url}/v1/datasets/{ds}", timeout=30)  # nor deleted under a queued job
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "dataset_in_use", busy.text

    # A worker starts; SIGTERM (a spot reclaim notice) after a few steps: it checkpoints, gives the job back, exits 0.
    first = site.worker()
    wait_for(lambda: any(e.get("step", 0) >= 7 for e in events(site, job["id"])), "7 steps", timeout=240.0)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0, (site.root / "worker.log").read_text()
    paused = site.get(f"/v1/fine_tunes/{job['id']}")
    assert paused["status"] == "queued" and 7 <= paused["step"] < STEPS
    assert any(e.get("reason") == "preempted" for e in events(site, job["id"]))

    # A second worker resumes from the checkpoint and finishes.
    second = site.worker()
    assert second.wait(timeout=600) == 0, (site.root / "worker.log").read_text()
    done = site.get(f"/v1/fine_tunes/{job['id']}")
    assert done["status"] == "succeeded", done
    assert done["voice_id"] and done["step"] == STEPS
    report = done["report"]
    assert len(report["losses"]) == STEPS
    assert report["similarity"]["held_out_clips"] == 2 and "gain" in report["similarity"]
    curve = httpx.get(f"{site.server.url}{report['loss_curve']}", timeout=30)
    assert curve.status_code == 200 and curve.content.startswith(b"\x89PNG"), curve.text[:200]
    progress = [e for e in events(site, job["id"]) if e["type"] == "progress"]
    assert {"step", "loss", "eta_s"} <= set(progress[-1]) and progress[-1]["step"] == STEPS

    # The voice belongs to the tenant and speaks wherever a voice goes.
    voices = site.get("/v1/audio/voices")["data"]
    assert any(v["id"] == done["voice_id"] and v["name"] == "slt-tuned" for v in voices)
    spoken = site.post(
        "/v1/audio/speech", json={"model": "qwen3", "input": "Hello from a tuned voice.", "voice": "slt-tuned"}
    )
    assert spoken.status_code == 200, spoken.text
    assert len(spoken.content) > 1000
    # Its consent is now used: a new fine-tune of the same dataset is refused before any training.
    refused = site.post("/v1/fine_tunes", json={**body, "name": "third"})
    assert refused.status_code == 403, refused.text
    # Deleting the voice removes it; the server forgets its adapter.
    deleted = httpx.delete(f"{site.server.url}/v1/audio/voices/{done['voice_id']}", timeout=30)
    assert deleted.status_code == 200, deleted.text
    gone = site.post("/v1/audio/speech", json={"model": "qwen3", "input": "Still there?", "voice": "slt-tuned"})
    assert gone.status_code == 400, gone.text


def test_fine_tunes_are_listed_cancelled_and_checked(site: Site) -> None:
    ds = site.new_dataset()
    made = site.post("/v1/fine_tunes", json={"dataset": ds, "name": "to-cancel", "steps": 5})
    assert made.status_code == 201, made.text
    job = made.json()["id"]
    assert job in [j["id"] for j in site.get("/v1/fine_tunes")["data"]]
    cancelled = site.post(f"/v1/fine_tunes/{job}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert site.post(f"/v1/fine_tunes/{job}/cancel").status_code == 409
    assert site.worker().wait(timeout=120) == 0  # nothing to take: a cancelled job is never trained
    assert site.get(f"/v1/fine_tunes/{job}")["status"] == "cancelled"
    assert httpx.get(f"{site.server.url}/v1/fine_tunes/ft_nope", timeout=10).status_code == 404
    bad = [
        ({"dataset": "ds_missing", "name": "x"}, 404),
        ({"dataset": ds, "name": "x", "rank": 0}, 400),
        ({"dataset": ds, "name": "x", "targets": ["lm_head"]}, 400),
        ({"dataset": ds, "name": "x", "steps": 10**9}, 400),
        ({"dataset": ds, "name": "x", "surprise": 1}, 400),
    ]
    for body, status in bad:
        response = site.post("/v1/fine_tunes", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
