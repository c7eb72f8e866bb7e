"""Fine-tuning on the CPU default: `chorus serve` (Piper) and `chorus worker --queue finetune` fit the voice
converter on a whole dataset; the voice speaks, and its report compares it with the one-clip voice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.consent_flow import give_consent
from tests.e2e.test_datasets import dataset
from tests.e2e.test_fine_tunes import Site
from tests.finetune.test_dataset_archive import zipped
from tests.voices.speech import PARAGRAPH

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def piper_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("fine-tunes-piper")
    config = {"server": {"canary_interval_s": 0}, "finetune": {"min_dataset_minutes": 0.1, "lease_s": 5}}
    server: Server = start_server(root, config)
    (path,) = root.glob("chorus-*.yaml")
    yield Site(server, Path(path), root)
    stop_server(server)


def test_a_piper_fine_tune_fits_the_converter_on_the_dataset(piper_site: Site) -> None:
    site = piper_site
    consent = give_consent(site.server.url, voice="slt")
    files = {"archive": ("ds.zip", zipped(dataset(PARAGRAPH[:8], "slt")), "application/zip")}
    made = site.post("/v1/datasets", data={"name": "slt-lines", "consent": consent}, files=files)
    assert made.status_code == 201, made.text
    job = site.post("/v1/fine_tunes", json={"dataset": made.json()["id"], "name": "slt-piper", "seed": 3})
    assert job.status_code == 201 and job.json()["backend"] == "piper", job.text
    assert site.worker().wait(timeout=600) == 0, (site.root / "worker.log").read_text()
    done = site.get(f"/v1/fine_tunes/{job.json()['id']}")
    assert done["status"] == "succeeded", done
    similarity = done["report"]["similarity"]
    assert done["report"]["clips_held_out"] and set(done["report"]["clips_held_out"]).isdisjoint(
        done["report"]["clips_fit"]
    )
    assert {"one_clip", "dataset", "gain", "per_clip"} <= set(similarity), similarity
    spoken = site.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "slt-piper"})
    assert spoken.status_code == 200 and len(spoken.content) > 1000, spoken.text
    voice = next(v for v in site.get("/v1/audio/voices")["data"] if v["name"] == "slt-piper")
    assert voice["id"] == done["voice_id"] and voice["consent_id"] == consent
