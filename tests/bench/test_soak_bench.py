"""`chorus bench-soak`: a quick real run accounts for every caller, and the RSS slope arithmetic is right."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chorus.bench.soak import (
    FLAT_MIB_PER_HOUR,
    MIN_JUDGED_SOAK_S,
    ProcSample,
    add_arguments,
    fit_line,
    rss_trend,
    run,
)


def test_fit_line_recovers_a_known_line_and_its_error() -> None:
    slope, intercept, stderr = fit_line([(x, 3.0 + 0.5 * x) for x in range(10)])
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(3.0) and stderr == pytest.approx(0.0)
    # 11, 9, 11, 9 at x = 0..3, by hand: slope -0.4, intercept 10.6, residuals 0.4, -1.2, 1.2, -0.4.
    slope, intercept, stderr = fit_line([(0, 11.0), (1, 9.0), (2, 11.0), (3, 9.0)])
    assert slope == pytest.approx(-0.4) and intercept == pytest.approx(10.6)
    assert stderr == pytest.approx((3.2 / 2 / 5) ** 0.5)  # sqrt(residual sum / (n - 2) / sum (x - mean)^2)
    with pytest.raises(ValueError):
        fit_line([(0, 1.0), (1, 2.0)])


def _samples(mib_per_hour: float, *, warmup_s: float, soak_s: float, every_s: float = 5.0) -> list[ProcSample]:
    """RSS rising at ``mib_per_hour`` from 500 MiB, with a warm-up that jumps 80 MiB (it must not count)."""
    count = int((warmup_s + soak_s) / every_s) + 1
    times = [i * every_s for i in range(count)]
    return [ProcSample(t, 500.0 + mib_per_hour * t / 3600 - (80.0 if t < warmup_s else 0.0), 9) for t in times]


def test_rss_trend_excludes_the_warm_up_and_judges_the_slope() -> None:
    flat = rss_trend(_samples(12.0, warmup_s=30, soak_s=600), warmup_s=30, soak_s=600)
    assert flat["slope_mib_per_h"] == pytest.approx(12.0)
    assert flat["samples"] == 121 and flat["flat"] is True
    assert flat["start_mib"] == pytest.approx(500.1) and flat["end_mib"] == pytest.approx(500 + 12 * 630 / 3600)
    assert flat["max_mib"] == flat["end_mib"]
    leaking = rss_trend(_samples(2 * FLAT_MIB_PER_HOUR, warmup_s=30, soak_s=600), warmup_s=30, soak_s=600)
    assert leaking["slope_mib_per_h"] == pytest.approx(2 * FLAT_MIB_PER_HOUR) and leaking["flat"] is False
    # A soak too short to resolve the bound reports its slope but does not judge it.
    short = rss_trend(_samples(2 * FLAT_MIB_PER_HOUR, warmup_s=5, soak_s=20), warmup_s=5, soak_s=20)
    assert MIN_JUDGED_SOAK_S > 20 and short["flat"] is None and short["samples"] == 5


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_run_accounts_for_every_caller(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run(parser.parse_args(["--quick", "--out", str(tmp_path)]))
    report = json.loads((tmp_path / "soak.json").read_text())
    flood, soak = report["flood"], report["soak"]
    assert flood["clients"] == len(flood["requests"]) == 40
    assert flood["outcomes"]["200"] + flood["outcomes"]["429"] == 40, flood["error_samples"]
    assert flood["outcomes"]["5xx"] == flood["outcomes"]["connection error"] == flood["outcomes"]["timeout"] == 0
    assert all(r["bytes"] > 0 for r in flood["requests"] if r["outcome"] == "200")
    assert flood["idle_after_s"] is not None and flood["idle_after_s"] <= 30
    assert 0 < flood["rss_before_mib"] <= flood["rss_peak_mib"]
    assert soak["outcomes"]["200"] > 0 and soak["outcomes"]["200"] + soak["outcomes"]["429"] == soak["requests"]
    assert soak["rss"]["samples"] >= 3 and len(soak["rss_samples"]) > soak["rss"]["samples"]
    assert report["drain"]["graceful"], report["drain"]
    assert report["machine"]["commit"] and report["settings"]["max_slots"] == 16
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert "| requirement | held | measured |" in (tmp_path / "soak.md").read_text()
    assert report["passed"] and code == 0
