"""`chorus bench-jobs --quick`: live streams measured alone and beside a running job, the job making audio."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chorus.bench.jobs import render, run


def test_a_quick_run_measures_both_sides(tmp_path: Path) -> None:
    args = argparse.Namespace(
        live_streams="4", repeats=1, window_s=6.0, job_items=8, out=str(tmp_path), quick=True, fine_tune=None
    )
    assert run(args) == 0
    report = json.loads((tmp_path / "jobs.json").read_text())
    (row,) = report["runs"]
    for side in ("alone", "with_job"):
        assert row[side]["requests"] == row[side]["ok"] + row[side]["rejected_429"] + row[side]["errors"] > 0
        assert row[side]["errors"] == 0
    assert row["with_job"]["job"]["audio_s"] >= 0
    assert (tmp_path / "jobs.png").stat().st_size > 0
    assert "| 4 | running |" in render(report)
