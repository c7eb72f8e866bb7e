"""Training datasets over a real `chorus serve` (API keys, two tenants): the report of a good dataset, the consent
speaker check, and every refusal with its status and code, nothing stored for any of them."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chorus.finetune.dataset_speakers import CLIP_MARGIN
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.consent_flow import give_consent
from tests.e2e.test_auth import auth, cli, create_key
from tests.finetune.test_dataset_archive import member, metadata, tarred, zipped
from tests.voices.speech import PARAGRAPH, SHORT_SENTENCE, encode, flite_speak, wav_bytes

pytestmark = [pytest.mark.e2e]
MAX_BYTES = 3 * 2**20
MAX_CLIPS = 12


@dataclass
class Site:
    server: Server
    a: dict[str, str]  # tenant-a's key header
    b: dict[str, str]  # tenant-b's
    consent: str  # tenant-a's consent, spoken by flite's slt
    config: Path  # for the CLI
    blobs: Path

    def post(
        self, archive: bytes, *, consent: str | None = "", name: str = "ds", filename: str = "ds.zip"
    ) -> httpx.Response:
        data = {"name": name, **({"consent": consent or self.consent} if consent is not None else {})}
        files = {"archive": (filename, archive, "application/octet-stream")}
        return httpx.post(f"{self.server.url}/v1/datasets", data=data, files=files, headers=self.a, timeout=120)

    def stored(self) -> set[str]:
        """Dataset folders in the blob store (tenant-a), to check that refusals leave nothing behind."""
        folder = self.blobs / "datasets" / "tenant-a"
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def listed(self) -> list[str]:
        response = httpx.get(f"{self.server.url}/v1/datasets", headers=self.a, timeout=10)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["data"]]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("datasets")
    config = root / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(root / "data")}))
    a, b = (auth(create_key(config, tenant)) for tenant in ("tenant-a", "tenant-b"))
    finetune = {
        "min_dataset_minutes": 0.1,  # 6 s of speech: two flite sentences
        "max_dataset_bytes": MAX_BYTES,
        "max_dataset_clips": MAX_CLIPS,
        "speaker_check_clips": 8,
    }
    settings = {"auth": {"mode": "required"}, "server": {"canary_interval_s": 0}, "finetune": finetune}
    server = start_server(root, {"data_dir": str(root / "data"), **settings})
    consent = give_consent(server.url, a, voice="slt")
    yield Site(server, a, b, consent, config, root / "data" / "blobs")
    stop_server(server)


def wav(text: str, voice: str = "slt") -> bytes:
    return wav_bytes(*flite_speak(text, voice))


def dataset(sentences: list[str], voice: str = "slt", *, folder: str = "my-voice/") -> dict[str, bytes]:
    files = {f"{folder}wavs/{n}.wav": wav(text, voice) for n, text in enumerate(sentences)}
    rows = [(f"wavs/{n}.wav", text) for n, text in enumerate(sentences)]
    return {f"{folder}metadata.csv": metadata(rows), **files}


def error(response: httpx.Response) -> dict[str, Any]:
    detail: dict[str, Any] = response.json()["error"]
    return detail


def test_a_dataset_is_reported_listed_fetched_and_deleted(site: Site) -> None:
    files = dataset(PARAGRAPH[:5])
    audio, rate = flite_speak(PARAGRAPH[1])
    files |= {
        "my-voice/wavs/copy.wav": files["my-voice/wavs/0.wav"],  # the same file twice
        "my-voice/wavs/1.mp3": encode(0.5 * audio, rate, "mp3"),  # the same audio, re-encoded
        "my-voice/wavs/wrong.wav": wav(PARAGRAPH[6]),  # its row says another sentence
        "my-voice/wavs/stray.wav": wav(PARAGRAPH[7]),  # in no row
    }
    rows = [
        ("wavs/copy.wav", PARAGRAPH[0]),
        ("wavs/1.mp3", PARAGRAPH[1]),
        ("wavs/wrong.wav", PARAGRAPH[8]),
        ("wavs/gone.wav", "A file that is not in the archive."),
    ]
    files["my-voice/metadata.csv"] += metadata(rows).split(b"\n", 1)[1]
    made = site.post(zipped(files), name="Ada, read aloud")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["id"].startswith("ds_") and made.headers["location"] == f"/v1/datasets/{body['id']}"
    summary = (body["object"], body["name"], body["consent_id"], body["clips"], body["kept"])
    assert summary == ("dataset", "Ada, read aloud", site.consent, 10, 5)
    report = body["report"]
    problems = {c["file_name"]: c["problems"] for c in report["clips"]}
    assert problems == {
        **{f"wavs/{n}.wav": [] for n in range(5)},
        "wavs/copy.wav": ["duplicate"],
        "wavs/1.mp3": ["duplicate"],
        "wavs/wrong.wav": ["transcript_mismatch"],
        "wavs/gone.wav": ["missing_file"],
        "wavs/stray.wav": ["not_in_metadata"],
    }
    by_name = {c["file_name"]: c for c in report["clips"]}
    assert by_name["wavs/1.mp3"]["duplicate_of"] == "wavs/1.wav"
    assert by_name["wavs/copy.wav"]["duplicate_of"] == "wavs/0.wav"
    first = by_name["wavs/0.wav"]
    assert (first["sample_rate"], first["channels"], first["clipping"]) == (rate, 1, 0.0)
    assert 3.0 < first["speech_s"] <= first["duration_s"] < 6.0 and first["snr_db"] > 30
    heard = PARAGRAPH[0].lower().replace(",", "").rstrip(".")
    assert first["transcript"] == {"status": "ok", "wer": 0.0, "heard": heard}
    totals = report["totals"]
    assert (totals["clips"], totals["kept"], totals["excluded"]) == (10, 5, 5)
    assert 0.3 < totals["speech_minutes"] == body["speech_minutes"] < 0.5 and totals["sample_rates"] == {str(rate): 5}
    assert report["transcripts"] == {"sampled": 6, "checked": 6, "mismatched": 1, "unchecked": 0, "max_wer": 0.3}
    speaker = report["speaker"]
    assert speaker["consent_id"] == site.consent and speaker["checked"] == 6 and speaker["threshold"] == 0.75
    # The rule (chorus.finetune.dataset_speakers): a clip alone against the consent is held to the threshold less
    # CLIP_MARGIN. The consent says the server's random challenge phrase, so a clip's score against it varies from
    # run to run: the lowest clip scored 0.777-0.878 over four runs, and under 0.75 in one.
    floor = 0.75 - CLIP_MARGIN
    assert all(c["consent_similarity"] >= floor and c["others_similarity"] >= 0.75 for c in speaker["clips"])

    # A second one, as a .tar.gz, for the list's pages.
    second = site.post(tarred(dataset(PARAGRAPH[5:8], folder="")), name="second", filename="b.tar.gz")
    assert second.status_code == 201, second.text
    ids = [second.json()["id"], body["id"]]
    url = f"{site.server.url}/v1/datasets"
    page = httpx.get(url, params={"limit": 1}, headers=site.a, timeout=10).json()
    assert [d["id"] for d in page["data"]] == ids[:1] and page["has_more"] and "report" not in page["data"][0]
    rest = httpx.get(url, params={"limit": 1, "before": ids[0]}, headers=site.a, timeout=10).json()
    assert [d["id"] for d in rest["data"]] == ids[1:]
    fetched = httpx.get(f"{url}/{body['id']}", headers=site.a, timeout=10).json()
    assert fetched == body

    # Another tenant sees none of it.
    assert httpx.get(url, headers=site.b, timeout=10).json()["data"] == []
    for method in ("GET", "DELETE"):
        other = httpx.request(method, f"{url}/{body['id']}", headers=site.b, timeout=10)
        assert other.status_code == 404 and error(other)["type"] == "not_found_error"

    for dataset_id in ids:
        gone = httpx.delete(f"{url}/{dataset_id}", headers=site.a, timeout=10)
        assert gone.json() == {"id": dataset_id, "object": "dataset.deleted", "deleted": True}
        assert httpx.get(f"{url}/{dataset_id}", headers=site.a, timeout=10).status_code == 404
    assert site.listed() == [] and site.stored() == set()
    expected = [("dataset.create", ids[1]), ("dataset.create", ids[0])]
    expected += [("dataset.delete", ids[0]), ("dataset.delete", ids[1])]
    for _ in range(50):  # audit rows are written off the request path, within moments
        exported = cli(site.config, "audit", "export", "--tenant", "tenant-a").stdout
        logged = [json.loads(line) for line in exported.splitlines()]
        kinds = [(r["kind"], r["subject"]) for r in logged if r["kind"] in ("dataset.create", "dataset.delete")]
        if len(kinds) >= len(expected):
            break
        time.sleep(0.2)
    assert kinds == expected


def test_a_dataset_of_another_speaker_than_the_consent_is_refused(site: Site) -> None:
    awb = give_consent(site.server.url, site.a, voice="awb")
    refused = site.post(tarred(dataset(PARAGRAPH[:3])), consent=awb, filename="ds.tar.gz")
    assert refused.status_code == 403, refused.text
    detail = error(refused)
    assert (detail["type"], detail["code"], detail["param"]) == ("permission_error", "speaker_mismatch", "archive")
    assert [c["file_name"] for c in detail["clips"]] == ["wavs/0.wav", "wavs/1.wav", "wavs/2.wav"]
    assert all(c["consent_similarity"] < 0.75 for c in detail["clips"]) and awb in detail["message"]
    assert site.listed() == [] and site.stored() == set()


def test_mixed_speakers_are_refused_naming_the_odd_clips(site: Site) -> None:
    files = dataset(PARAGRAPH[:4])
    files |= {"my-voice/wavs/x.wav": wav(PARAGRAPH[4], "awb"), "my-voice/wavs/y.wav": wav(PARAGRAPH[5], "awb")}
    files["my-voice/metadata.csv"] += f'wavs/x.wav,"{PARAGRAPH[4]}"\nwavs/y.wav,"{PARAGRAPH[5]}"\n'.encode()
    refused = site.post(zipped(files))
    assert refused.status_code == 403, refused.text
    detail = error(refused)
    assert detail["code"] == "mixed_speakers"
    assert [c["file_name"] for c in detail["clips"]] == ["wavs/x.wav", "wavs/y.wav"]
    assert "wavs/x.wav, wavs/y.wav" in detail["message"]
    assert site.listed() == [] and site.stored() == set()


def test_too_little_speech_is_refused_with_the_report(site: Site) -> None:
    refused = site.post(zipped(dataset([SHORT_SENTENCE])))
    assert refused.status_code == 422, refused.text
    detail = error(refused)
    assert detail["code"] == "too_little_speech" and "at least 0.1 min" in detail["message"]
    assert detail["report"]["totals"]["kept"] == 1 and detail["report"]["totals"]["speech_minutes"] < 0.1
    assert site.listed() == [] and site.stored() == set()


def test_bad_archives_and_consents_are_refused_naming_the_problem(site: Site) -> None:
    good = dataset(PARAGRAPH[:2])
    meta = good["my-voice/metadata.csv"]
    cases: list[tuple[bytes, int, str]] = [
        (zipped({k: v for k, v in good.items() if not k.endswith(".csv")}), 400, "no_metadata"),
        (zipped({**good, "my-voice/metadata.csv": b"wavs/0.wav|Hello\n"}), 400, "bad_metadata"),
        (zipped({**good, "../x.wav": b"x"}), 400, "unsafe_path"),
        (tarred(good, extra=[member("my-voice/wavs/2.wav", tarfile.SYMTYPE, "/etc/passwd")]), 400, "unsafe_member"),
        (zipped({"metadata.csv": meta, **{f"{n}.wav": b"" for n in range(MAX_CLIPS + 1)}}), 400, "too_many_clips"),
        (zipped({"metadata.csv": meta, **{f"{n}.txt": b"" for n in range(MAX_CLIPS + 300)}}), 400, "too_many_files"),
        (b"not an archive at all", 400, "not_an_archive"),
        (bytes(MAX_BYTES + 300_000), 413, "too_large"),
    ]
    for archive, status, code in cases:
        refused = site.post(archive)
        assert (refused.status_code, error(refused).get("code")) == (status, code), refused.text
        assert error(refused)["param"] == "archive"
    archive = zipped(good)
    unconsented = error(site.post(archive, consent=None))
    assert (unconsented["type"], unconsented["code"], unconsented["param"]) == (
        "permission_error",
        "consent_required",
        "consent",
    )
    for consent in ("cons_" + "0" * 24, give_consent(site.server.url, site.b, voice="slt")):  # unknown; tenant-b's
        missing = site.post(archive, consent=consent)
        assert missing.status_code == 404 and error(missing)["param"] == "consent", missing.text
    assert site.listed() == [] and site.stored() == set()
