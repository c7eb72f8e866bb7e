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
    assert set(result["mean_similarity"]) == {"floor", "baseline", "fallback", "ours", "ceiling"}
    assert len(result["speakers"]) == 2, proc.stderr  # a festival and an espeak-ng speaker
    assert (tmp_path / "voices.png").stat().st_size > 1000
    assert "| **mean** |" in (tmp_path / "voices.md").read_text()
