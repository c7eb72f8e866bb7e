"""`chorus bench --cost`: prices a results file by the printed formula; projections and missing results are labelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chorus.bench.corpus import text_for
from chorus.cli import main
from chorus.errors import ChorusError

REPO = Path(__file__).resolve().parents[2]


def results_file(tmp_path: Path) -> Path:
    """A small results file in `chorus bench`'s shape: two burst runs of 2 requests, capacity 10 streams."""

    def run(audio_per_wall: float) -> dict[str, Any]:
        streams = [{"index": i, "status": 200, "audio_s": 4.0} for i in range(2)]
        streams.append({"index": 2, "status": 429, "audio_s": 0.0})  # refused: neither text nor audio counts
        return {"audio_per_wall_s": audio_per_wall, "streams": streams}

    report = {
        "machine": {"commit": "abc123", "usable_cpus": 2},
        "capacity": {"chorus": {"median": 10.0}},
        "runs": {"burst": {"chorus": {"1": [run(1.0)], "2": [run(8.0), run(12.0), run(9.0)]}}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    return path


def test_cost_follows_the_formula_and_labels_projections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = results_file(tmp_path)
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        f"machines:\n  small: 0.5\n  big: {{usd_per_hour: 2.0, cores: 8, results: {results}}}\n"
        f"  gpu: {{usd_per_hour: 4.0, results: {tmp_path / 'missing.json'}}}\napis:\n  hosted: 15\n"
    )
    out = tmp_path / "out"
    argv = ["bench", "--cost", "--prices", str(prices), "--results", str(results), "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "cost.json").read_text())
    small, big, gpu = report["rows"]
    chars_per_audio_s = (len(text_for(0)) + len(text_for(1))) / 8.0  # 3 runs x the same 2 texts over 3 x 8 s
    assert small["throughput"]["chars_per_audio_s"] == pytest.approx(chars_per_audio_s)
    batch_per_hour = chars_per_audio_s * 9.0 * 3600  # median burst throughput at the largest N
    assert small["usd_per_1m"]["batch"] == pytest.approx(0.5 * 1e6 / batch_per_hour)
    live_per_hour = chars_per_audio_s * 10.0 * 3600
    assert small["usd_per_1m"]["live"] == pytest.approx(0.5 * 1e6 / live_per_hour)
    assert not small["projected"] and big["projected"] and big["scale"] == 4.0
    assert big["usd_per_1m"]["live"] == pytest.approx(2.0 * 1e6 / (4 * live_per_hour))
    assert gpu == {"kind": "gpu", "usd_per_hour": 4.0, "measured": False, "results": str(tmp_path / "missing.json")}
    month = small["monthly"][-1]  # 1e9 characters
    assert month["always_on_devices"] == -(-1e9 // (live_per_hour * 730))
    assert month["api_usd"] == {"hosted": 15_000.0}
    assert small["break_even_chars_per_month"]["hosted"] == pytest.approx(730 * 0.5 * 1e6 / 15)
    text = capsys.readouterr().out
    assert "$ per 1M characters = price_per_hour x 1e6 / H" in text and "projected x4.0 by cores" in text
    assert "not measured" in text and (out / "cost.png").stat().st_size > 10_000


def test_the_sample_price_file_prices_the_committed_results(tmp_path: Path) -> None:
    argv = ["bench", "--cost", "--prices", str(REPO / "prices.example.yaml"), "--out", str(tmp_path)]
    argv += ["--results", str(REPO / "bench/results/latest.json")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "cost.json").read_text())["rows"]
    assert {r["system"] for r in rows if r["measured"]} >= {"chorus", "one-at-a-time", "piper-http"}


@pytest.mark.parametrize(
    "text",
    ["machines: {}\n", "machines:\n  a: free\n", "machines:\n  a: -1\n", "machines:\n  a: 1\napis:\n  x: cheap\n", "["],
)
def test_bad_price_files_are_refused(tmp_path: Path, text: str) -> None:
    from chorus.bench.cost import load_prices

    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ChorusError):
        load_prices(path, tmp_path / "r.json")
