"""The scripts in ``bench/``: their arithmetic on hand-computed cases, and the record they write."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from chorus.bench.load import run_record, write_result

BENCH = Path(__file__).resolve().parents[2] / "bench"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_window_summary() -> None:
    summary = script("first_window_nice").summary
    # Ten windows: wall 0.10 ... 1.00 s (in shuffled order), CPU 0.1 s each but two at 0.2 s.
    walls = [0.3, 0.1, 0.5, 0.2, 1.0, 0.4, 0.9, 0.6, 0.8, 0.7]
    cpus = [0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.2, 0.1, 0.1, 0.1]
    got = summary([{"wall_s": w, "cpu_s": c} for w, c in zip(walls, cpus, strict=True)])
    assert got["n"] == 10
    assert got["wall_p50_s"] == pytest.approx(0.55)  # between the 5th and 6th of ten
    assert got["wall_p90_s"] == 0.9  # nearest rank: the 9th of ten
    assert got["wall_max_s"] == 1.0
    assert got["cpu_p50_s"] == pytest.approx(0.1)
    # Each window's own ratio: 3, 1, 5, 2, 5, 4, 4.5, 6, 8, 7 -> sorted 1 2 3 4 4.5 5 5 6 7 8, median 4.75.
    assert got["wall_over_cpu_p50"] == pytest.approx(4.75)
    one = summary([{"wall_s": 0.2, "cpu_s": 0.1}])
    assert (one["wall_p50_s"], one["wall_p90_s"], one["wall_max_s"]) == (0.2, 0.2, 0.2)
    assert one["wall_over_cpu_p50"] == pytest.approx(2.0)


def test_model_split_of_one_threads_totals() -> None:
    split = script("model_split").split
    # 11 s of CPU for 100 s of audio: decoder 7.7 s, encoder 1.65 s, flow 1.1 s, the rest 0.55 s; 1040 frames
    # decoded for 1000 output frames.
    got = split(11.0, 100.0, {"decode": 7.7, "encode": 1.65, "run_flow": 1.1}, 1040, 1000)
    assert got["core_s_per_audio_s"] == pytest.approx(0.11)
    assert got["decode_share"] == pytest.approx(0.70)
    assert got["encode_share"] == pytest.approx(0.15)
    assert got["run_flow_share"] == pytest.approx(0.10)
    assert got["other_share"] == pytest.approx(0.05)
    assert got["decoder_context_overhead"] == pytest.approx(0.04)
    # A graph without a separate flow: its share is 0 and the rest is what the other parts left.
    assert split(2.0, 10.0, {"decode": 1.5}, 10, 10)["other_share"] == pytest.approx(0.25)


def test_a_scripts_record_names_where_and_how_it_ran(tmp_path: Path) -> None:
    args = argparse.Namespace(repeats=3, out=tmp_path / "r")
    record = run_record(args, by_threads={"1": [0.1]})
    assert record["args"] == {"repeats": "3", "out": str(tmp_path / "r")}
    assert record["by_threads"] == {"1": [0.1]}
    assert record["cores"] >= 1 and record["cpu"] and record["date"]
    assert record["commit"]  # this checkout's commit (a test runs in one)
    write_result(tmp_path / "out" / "r", record, ["# title", "", "| a |"])
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == record
    assert (tmp_path / "out" / "r.md").read_text() == "# title\n\n| a |\n"
