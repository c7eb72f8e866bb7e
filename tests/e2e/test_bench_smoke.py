"""`chorus bench --quick` runs end to end (real servers, real HTTP) and writes its results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def quick(command: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`chorus COMMAND --quick --out OUT`, which must succeed."""
    proc = subprocess.run(
        [sys.executable, "-m", "chorus.cli", command, "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_quick_bench_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    proc = quick("bench", tmp_path)
    result = json.loads((tmp_path / "latest.json").read_text())
    systems = ["chorus", "one-at-a-time", "piper-http"]
    assert result["settings"]["systems"] == systems
    for workload, sizes in (("burst", {"1", "4"}), ("live", {"4"})):
        for system in systems:
            runs = result["runs"][workload][system]
            assert set(runs) == sizes, (workload, system)
            for n, measured in runs.items():
                (m,) = measured  # --quick: one repeat
                expected = int(n) if workload == "burst" else 3  # live: 4 streams over 6 s, one every 2.5 s
                assert m["requests"] == expected and m["ok"] == expected, (workload, system, m["error_samples"])
                assert m["audio_s"] > 5.0 * expected  # ~10 s of speech each
    assert result["machine"]["commit"]
    assert set(result["capacity"]) == set(systems)
    assert (tmp_path / "latest.png").stat().st_size > 1000
    markdown = (tmp_path / "latest.md").read_text()
    assert "| system | N | ok/req |" in markdown and "| one-at-a-time | 4 |" in markdown
    assert "capacity (largest N" in proc.stdout


def test_quick_voice_bench_measures_every_method(tmp_path: Path) -> None:
    proc = quick("bench-voices", tmp_path)
    result = json.loads((tmp_path / "voices.json").read_text())
    methods = {"floor", "baseline", "fallback", "ours", "ceiling"}
    # One speaker of each set: the development set (tuned on) and the test set (only reported).
    assert list(result["sets"]) == ["dev", "test"], proc.stderr
    for name, expected in (("dev", "en+f3 (espeak)"), ("test", "rms (flite)")):
        speaker_set = result["sets"][name]
        assert [s["name"] for s in speaker_set["speakers"]] == [expected], proc.stderr
        assert set(speaker_set["mean_similarity"]) == methods
        (speaker,) = speaker_set["speakers"]
        sims = speaker["similarity"]
        assert all(0.0 < sims[m] <= 1.0 for m in methods), sims
        # A target against itself beats anything converted; the conversion is measured, cost and all.
        assert sims["ceiling"] > max(sims["floor"], sims["ours"], sims["fallback"]), sims
        assert min(sims["ours"], sims["fallback"]) > sims["floor"], sims  # converted towards the target
        assert set(speaker["rtf"]) == set(speaker["fit_s"]) == {"baseline", "fallback", "ours"}
        assert all(0.0 < v < 5.0 for v in speaker["rtf"].values()), speaker["rtf"]
    assert result["sets"]["dev"]["texts"]["reference"] != result["sets"]["test"]["texts"]["reference"]
    markdown = (tmp_path / "voices.md").read_text()
    assert markdown.count("| **mean** |") == 2 and "## Test set" in markdown and "## Development set" in markdown
    assert (tmp_path / "voices.png").stat().st_size > 1000
