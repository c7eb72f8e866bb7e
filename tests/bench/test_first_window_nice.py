"""``bench/first_window_nice.py``'s summary of its timed first windows, on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "first_window_nice.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("first_window_nice", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_of_first_windows() -> None:
    summary = _script().summary
    # Ten windows: wall 0.10 ... 1.00 s (in shuffled order), CPU 0.1 s each but the last two at 0.2 s.
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


def test_summary_of_one_window() -> None:
    got = _script().summary([{"wall_s": 0.2, "cpu_s": 0.1}])
    assert (got["wall_p50_s"], got["wall_p90_s"], got["wall_max_s"]) == (0.2, 0.2, 0.2)
    assert got["wall_over_cpu_p50"] == pytest.approx(2.0)
