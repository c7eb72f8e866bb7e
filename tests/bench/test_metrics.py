"""The bench's own arithmetic, on hand-computed cases: the simulated listener, percentiles, capacity, ETA error,
and how repeats and ratios are summarised."""

from __future__ import annotations

import math

import pytest

from chorus.bench.client import StreamResult
from chorus.bench.player import simulate
from chorus.bench.report import capacity_search, passes_live, ratios, stat
from chorus.bench.workloads import Measurement, eta_errors, percentile, summarize


def test_a_stream_that_keeps_ahead_never_runs_dry() -> None:
    # 1 s of audio at t=0, 2 s by t=0.5, 3 s by t=1.9: the player is never empty.
    play = simulate([(0.0, 1.0), (0.5, 2.0), (1.9, 3.0)])
    assert (play.underruns, play.stall_s) == (0, 0.0)


def test_each_gap_after_the_buffer_empties_is_one_underrun() -> None:
    # 0.5 s at t=0 runs out at 0.5; the next 0.5 s comes at 0.8 (0.3 s stall) and is played by 1.3; the next
    # piece comes at 2.0 (0.7 s stall).
    play = simulate([(0.0, 0.5), (0.8, 1.0), (2.0, 2.0)])
    assert play.underruns == 2
    assert play.stall_s == pytest.approx(1.0)
    assert play.first_stall_at_s == 0.5  # after the first half second of audio
    assert simulate([]).underruns == 0
    assert simulate([(0.0, 1.0), (1.0005, 2.0)]).underruns == 0  # within the 1 ms tolerance


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == 5.0  # rank ceil(4.75) = 5
    assert percentile(values, 20) == 1.0
    assert percentile([], 50) is None
    assert percentile([1.0, math.inf], 95) == math.inf  # a failed request is infinitely late


def _live(
    n: int, *, ttfa_p95: float | None = 0.3, underruns: int = 0, errors: int = 0, rejected: int = 0
) -> Measurement:
    return Measurement(
        "live", n, requests=3 * n, ok=3 * n - rejected, errors=errors, rejected_429=rejected, ttfa_p50_s=0.1,
        ttfa_p95_s=ttfa_p95, audio_s=30.0, wall_s=30.0, audio_per_wall_s=1.0, underruns=underruns,
        streams_with_underruns=min(underruns, 1), stall_s=0.0, client_cpu_s=0.1, server_cpu_s=None,
    )  # fmt: skip


def test_capacity_is_the_largest_size_before_the_first_failure() -> None:
    assert passes_live(_live(8)) and not passes_live(_live(8, ttfa_p95=1.2))
    assert not passes_live(_live(8, underruns=1)) and not passes_live(_live(8, rejected=1))
    assert not passes_live(_live(8, errors=1)) and not passes_live(_live(8, ttfa_p95=None))
    runs = {8: _live(8), 12: _live(12), 16: _live(16, ttfa_p95=1.5), 20: _live(20)}
    assert capacity_search(runs) == 12  # 20 passing after 16 failed is luck, not capacity
    assert capacity_search({8: _live(8, underruns=2)}) == 0
    assert capacity_search({}) == 0


def test_eta_error_is_actual_minus_predicted_for_served_requests_that_waited() -> None:
    results = [
        StreamResult(0, 0.0, status=200, ttfa_s=2.5, eta_s=2.0),  # half a second later than promised
        StreamResult(1, 0.0, status=200, ttfa_s=1.0, eta_s=1.5),  # half a second early
        StreamResult(2, 0.0, status=200, ttfa_s=0.2),  # never waited: no prediction
        StreamResult(3, 0.0, status=429, error="HTTP 429", end_s=0.01),
    ]
    assert eta_errors(results) == pytest.approx([0.5, -0.5])
    m = summarize("live", 4, results, client_cpu_s=0.0, server_cpu_s=None)
    assert (m.eta_count, m.eta_abs_error_p95_s, m.rejected_429, m.errors) == (2, 0.5, 1, 0)
    assert m.reject_p95_s == 0.01
    assert m.ttfa_p95_s is None  # the 429 counts as no audio
    assert m.ttfa_ok_p95_s == 2.5


def test_stat_and_per_repeat_ratios() -> None:
    s = stat([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.count) == (2.0, 1.0, 3.0, 3)
    assert stat([1.0, None], missing_is_inf=True).high is None  # a failure shows as "fail", not as a number
    assert stat([None]).count == 0

    def burst(rep: int, ttfa: float, rate: float) -> Measurement:
        return Measurement(
            "burst", 8, 8, 8, 0, 0, ttfa, ttfa, 80.0, 80.0 / rate, rate, 0, 0, 0.0, 0.0, None, repeat=rep
        )

    results = {
        "burst": {
            "chorus": {8: [burst(0, 0.5, 16.0), burst(1, 0.4, 15.0), burst(2, 0.6, 14.0)]},
            "base": {8: [burst(0, 1.0, 8.0), burst(1, 2.0, 10.0), burst(2, 0.6, 7.0)]},
        }
    }
    r = ratios(results, "chorus")["base"]["burst"][8]
    # Within each repeat: TTFA 0.5, 0.2, 1.0 -> median 0.5; throughput 2.0, 1.5, 2.0 -> median 2.0.
    assert (r["ttfa_p95"].median, r["ttfa_p95"].low, r["ttfa_p95"].high) == pytest.approx((0.5, 0.2, 1.0))
    assert (r["throughput"].median, r["throughput"].low, r["throughput"].high) == pytest.approx((2.0, 1.5, 2.0))
