"""``chorus bench-qwen3``: its numbers (spreads, within-repeat ratios, JSON/PNG) and a real run on the tiny model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from chorus.bench.qwen3_report import FRAME_SECONDS, RunResult, describe, spread, summarize, write


def result(step_ms: float, first_s: float, wall_s: float, n: int = 4, frames: int = 60) -> RunResult:
    steps = [step_ms / 1000 * (1 + 0.01 * (i % 5 - 2)) for i in range(frames)]  # median = step_ms
    return RunResult(steps, [first_s * (1 + 0.1 * i) for i in range(n)], [frames] * n, n * frames * 1920, wall_s)


def test_metrics_of_a_run() -> None:
    run = result(step_ms=20.0, first_s=0.5, wall_s=3.0)
    m = run.metrics()
    assert m["step_ms_p50"] == pytest.approx(20.0)
    assert m["first_audio_p50_s"] == pytest.approx(np.median(run.first_audio_s))
    assert m["audio_s_per_s"] == pytest.approx(4 * 60 * FRAME_SECONDS / 3.0)
    assert m["delivered_audio_s_per_s"] == pytest.approx(m["audio_s_per_s"])  # every frame delivered
    assert math.isnan(RunResult([], [1.0], [60], 60 * 1920, 1.0).metrics()["step_ms_p50"])  # library: no steps


def test_ratios_are_taken_within_each_repeat() -> None:
    # The machine slows down over the repeats: both systems slow together, their ratio stays.
    chorus = [result(10.0 * f, 0.2 * f, 2.0 * f) for f in (1, 2, 4)]
    vtts = [result(20.0 * f, 0.5 * f, 3.0 * f) for f in (1, 2, 4)]
    summary = summarize({"chorus": {4: chorus}, "vtts": {4: vtts}})
    ratios = summary["ratios"]["vtts"][4]
    assert ratios["step_ms_p50"] == {"min": pytest.approx(0.5), "median": pytest.approx(0.5), "max": pytest.approx(0.5)}
    assert ratios["first_audio_p50_s"]["median"] == pytest.approx(0.4)
    assert ratios["audio_s_per_s"]["median"] == pytest.approx(1.5)
    steps = summary["systems"]["chorus"][4]["step_ms_p50"]
    assert (steps["min"], steps["median"], steps["max"]) == pytest.approx((10.0, 20.0, 40.0))
    assert summary["frames_ok"][4]["vtts"] is True
    lines = describe(4, summary)
    assert any("chorus/vtts" in line and "0.50 x" in line for line in lines)


def test_different_frame_counts_are_flagged() -> None:
    short = RunResult([0.01] * 30, [0.1] * 4, [30] * 4, 4 * 30 * 1920, 1.0)
    summary = summarize({"chorus": {4: [result(10, 0.2, 2)]}, "vtts": {4: [short]}})
    assert summary["frames_ok"][4]["vtts"] is False
    assert "frame counts differ" in describe(4, summary)[-1]


def test_spread_ignores_missing_values() -> None:
    assert spread([3.0, math.nan, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert all(math.isnan(v) for v in spread([math.nan]).values())


def test_write_gives_strict_json_and_a_png(tmp_path: Path) -> None:
    runs = {"chorus": {4: [result(10, 0.2, 2)]}, "library": {4: [RunResult([], [2.0] * 4, [60] * 4, 4 * 115200, 2.0)]}}
    json_path, png_path = write(tmp_path / "out" / "qwen3-x", {"runs": runs}, summarize(runs), "title")
    data = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert data["summary"]["ratios"]["library"]["4"]["step_ms_p50"]["median"] is None
    assert data["runs"]["chorus"]["4"][0]["frames"] == [60] * 4
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_chorus_only_run_on_the_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="the qwen extra is not installed (scripts/install_qwen.sh)")
    from chorus.bench.qwen3 import main

    model = tmp_path / "tiny"
    assert main(["--save-tiny", str(model)]) == 0
    args = ["--model-path", str(model), "--label", "t", "--streams", "2", "--frames", "7", "--repeats", "2"]
    assert main([*args, "--threads", "1", "--no-library", "--out", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "vTTS baseline skipped" in out
    data = json.loads((tmp_path / "results" / "qwen3-t-cpu.json").read_text())
    runs = data["runs"]["chorus"]["2"]
    assert len(runs) == 2 and all(r["frames"] == [7, 7] for r in runs)
    assert all(len(r["step_s"]) >= 7 for r in runs) and all(r["first_audio_s"][0] > 0 for r in runs)
    assert data["conditions"]["chorus"]["first_emit_frames"] == 6
    assert (tmp_path / "results" / "qwen3-t-cpu.png").exists()


def test_a_python_without_vtts_is_a_clear_error(tmp_path: Path) -> None:
    from chorus.bench.qwen3_vtts import VttsBaseline, VttsError

    with pytest.raises(VttsError, match="vTTS"):
        VttsBaseline(sys.executable, tmp_path, threads=1, max_slots=2, emit_every_frames=6, device="cpu")


def test_a_dtype_gate_is_bounded_by_float32_against_itself() -> None:
    from chorus.bench.quality_gate import GateBounds, GateReport, SentenceScore
    from chorus.bench.qwen3_gate import bounds_from

    def score(mcd: float, similarity: float, candidate_errors: int) -> SentenceScore:
        return SentenceScore("a b c d e", mcd, similarity, 5, 1, candidate_errors, "", "")

    yardstick = GateReport((score(2.0, 0.98, 1), score(3.0, 0.96, 2)), GateBounds())
    bounds = bounds_from(yardstick, sentences=50)
    assert bounds.max_mean_mcd_db == pytest.approx(1.1 * 2.5 + 0.1)
    assert bounds.min_mean_similarity == pytest.approx(0.97 - 0.02)
    assert bounds.min_similarity == pytest.approx(0.96 - 0.03)
    assert bounds.max_wer_increase == pytest.approx(0.1 + 0.02)  # 3 vs 2 errors in 10 words
    assert bounds.min_sentences == 50


@pytest.mark.slow
def test_the_dtype_gate_runs_end_to_end_on_the_tiny_model(tmp_path: Path) -> None:
    import subprocess

    command = [sys.executable, "-m", "chorus.cli", "bench-qwen3", "--gate", "bfloat16", "--gate-sentences", "2"]
    command += ["--frames", "8", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1 = the candidate failed the gate: still a verdict
    (written,) = tmp_path.glob("qwen3-gate-*-bfloat16.json")
    report = json.loads(written.read_text())
    assert report["passed"] == (proc.returncode == 0)
    assert {c["name"] for c in report["checks"]} >= {"mean MCD (dB)", "WER increase (abs.)"}
    assert len(report["sentences"]) == 2 and math.isfinite(report["yardstick"]["mean_mcd_db"])
