"""Admission control's model (chorus.engine.admission, chorus.engine.cpuload), on hand-computed cases."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from chorus.config import Settings
from chorus.engine import cpuload
from chorus.engine.admission import (
    BUSY_OTHERS_CORES,
    AdmissionConfig,
    AdmissionController,
    Budget,
    Job,
    LoadModel,
    StreamPlan,
    fits,
    jobs_of,
)
from chorus.engine.builder import engine_config
from chorus.engine.client import Preparing
from chorus.engine.cpuload import MAX_OVERHEAD, CpuLoad, machine_cpu_s
from chorus.engine.engine import Engine
from chorus.engine.forecast import Forecast
from chorus.engine.request import Lead, Request, RequestStatus
from chorus.errors import QueueFullError
from chorus.models.base import SpeechInput, Window
from tests.engine.helpers import Collector, make_engine, submit, wait_final
from tests.fakes import FakePlannerBackend


def test_jobs_of_a_running_stream_are_due_as_its_audio_runs_out() -> None:
    plan = StreamPlan((Window(1.0, 0.1), Window(2.0, 0.2), Window(3.0, 0.3)), next_due=12.0)
    jobs = jobs_of(plan, 10.0, 0.25, Budget(capacity=1.0))
    expected = [(12.0, 0.1, 0.1), (13.0, 0.2, 0.2), (15.0, 0.3, 0.3)]
    assert len(jobs) == len(expected)
    for job, want in zip(jobs, expected, strict=True):  # pytest 9.2's approx refuses nested sequences
        assert job[:3] == pytest.approx(want)
    assert not any(j[3] for j in jobs)


def test_a_streams_lead_grows_with_its_audio_and_its_windows_come_due_that_much_sooner() -> None:
    lead = Lead(max_s=0.5, rate=0.25)
    windows = (Window(1.0, 0.1), Window(1.0, 0.1), Window(1.0, 0.1), Window(1.0, 0.1))
    # Playing, 1 s sent (lead 0.25 already in next_due): the lead grows 0.25 per second of audio up to 0.5.
    playing = StreamPlan(windows, next_due=12.0, sent_s=1.0)
    assert [j[0] for j in jobs_of(playing, 10.0, 0.25, Budget(1.0), lead=lead)] == pytest.approx(
        [12.0, 12.75, 13.75, 14.75]
    )
    # A newcomer: from its first window's due time, at 0.75 s of playing time per second of audio, then 1.
    newcomer = StreamPlan(windows)
    assert [j[0] for j in jobs_of(newcomer, 10.0, 0.25, Budget(1.0), lead=lead)] == pytest.approx(
        [10.25, 11.0, 11.75, 12.75]
    )
    assert [j[0] for j in jobs_of(newcomer, 10.0, 0.25, Budget(1.0))] == pytest.approx([10.25, 11.25, 12.25, 13.25])


def test_load_cannot_spend_the_streams_lead_on_newcomers() -> None:
    # One core. A stream playing with its whole lead needs 0.25 s of CPU per 0.5 s of audio, due every 0.5 s. A
    # newcomer of 0.24 s per 0.5 s fits beside it just in time: by 0.5 m, 0.49 m of CPU. With a 0.5 s lead built at
    # half of real time, its windows are due at 0.5, 0.75, 1.0, ...: by 1.0, 0.5 + 0.72 > 1.0.
    running = StreamPlan(tuple(Window(0.5, 0.25) for _ in range(10)), next_due=0.5, sent_s=5.0)
    newcomer = StreamPlan(tuple(Window(0.5, 0.24) for _ in range(10)))
    lead = Lead(max_s=0.5, rate=0.5)
    plain = AdmissionController(AdmissionConfig(first_audio_s=0.5))
    led = AdmissionController(AdmissionConfig(first_audio_s=0.5, lead=lead))
    assert plain.admissible([running], [newcomer, newcomer], 0.0, Budget(1.0)) == 1
    assert led.admissible([running], [newcomer], 0.0, Budget(1.0)) == 0
    # The lead of a stream that has one is already in its next_due: it does not move its later windows.
    assert [j[0] for j in jobs_of(running, 0.0, 0.5, Budget(1.0), lead=lead)[:3]] == pytest.approx([0.5, 1.0, 1.5])


def test_a_window_costs_its_cpu_times_the_margin_plus_serving_and_takes_longer_on_a_slow_worker() -> None:
    budget = Budget(capacity=2.0, margin=1.5, speed=0.5, overhead=0.01)
    window = Window(audio_s=2.0, cost_s=0.2)
    assert budget.demand(window) == pytest.approx(0.3 + 0.02)
    assert budget.wall(window) == pytest.approx(0.6)


def test_a_newcomers_first_window_is_due_at_its_target_or_when_it_can_be_done() -> None:
    plan = StreamPlan((Window(1.0, 0.1), Window(2.0, 0.2)))
    assert [j[0] for j in jobs_of(plan, 10.0, 0.25, Budget(1.0))] == pytest.approx([10.25, 11.25])
    # On a worker at a fifth of a core the first window takes 0.5 s: due then, and the stream plays from then.
    assert [j[0] for j in jobs_of(plan, 10.0, 0.25, Budget(1.0, speed=0.2))] == pytest.approx([10.5, 11.5])


def _jobs(*pairs: tuple[float, float]) -> list[Job]:
    """(deadline, CPU) jobs on a worker with a whole core (wall time = CPU)."""
    return [(due, cpu, cpu, False) for due, cpu in pairs]


def test_demand_bound() -> None:
    assert fits([_jobs((1.0, 0.5))], now=0.0, capacity=1.0)
    assert not fits([_jobs((0.4, 0.5))], now=0.0, capacity=4.0)  # one stream's window cannot use two workers
    two = [_jobs((1.0, 0.6)), _jobs((1.0, 0.6))]
    assert not fits(two, now=0.0, capacity=1.0)  # 1.2 s of CPU due within 1 s on one core
    assert fits(two, now=0.0, capacity=2.0)
    slow = [
        [(1.0, 0.6, 1.2, False)],
        [(1.0, 0.6, 1.2, False)],
    ]  # each takes 1.2 s of wall on its worker: its own chain is late
    assert not fits(slow, now=0.0, capacity=2.0)
    assert fits([_jobs((1.0, 0.5), (2.0, 0.6))], now=0.0, capacity=1.0)  # 0.5 by t=1, 1.1 by t=2
    assert not fits([_jobs((1.0, 0.5), (1.0, 0.6))], now=0.0, capacity=1.0)
    assert not fits([_jobs((-0.1, 0.01))], now=0.0, capacity=8.0)  # already late
    assert fits([], now=0.0, capacity=1.0)
    assert not fits([_jobs((1.0, 0.1))], now=0.0, capacity=0.0)


def test_a_long_window_started_first_blocks_a_worker() -> None:
    # B's 0.1 s is due at 0.5; A's next window (0.9 s) is due much later, but a worker may already be on it.
    streams = [_jobs((10.0, 0.9)), _jobs((0.5, 0.1))]
    assert not fits(streams, now=0.0, capacity=1.0)  # 0.1 + 0.9 blocking > 0.5
    assert fits(streams, now=0.0, capacity=2.0)  # 1.0 <= 2 x 0.5: the other core is free
    assert fits([_jobs((10.0, 0.9), (11.0, 0.9)), _jobs((0.5, 0.1))], now=0.0, capacity=2.0)  # only heads block
    # B is a newcomer's first window on the pipelined engine's newcomer lane: run at once, time-sharing the
    # core, so A does not block it (its CPU still counts), and it blocks nobody.
    newcomer = [(0.5, 0.1, 0.1, True)]
    assert fits([_jobs((10.0, 0.9)), newcomer], now=0.0, capacity=1.0)  # 0.1 <= 0.5, and 1.0 <= 10
    assert not fits([_jobs((10.0, 0.9)), [(0.5, 0.6, 0.6, True)]], now=0.0, capacity=1.0)  # 0.6 > 0.5
    assert not fits([_jobs((0.8, 0.2)), newcomer, _jobs((10.0, 0.9))], now=0.0, capacity=0.5)  # A still blocks C
    plan = StreamPlan((Window(1.0, 0.1), Window(2.0, 0.2)))
    lanes = [j[3] for j in jobs_of(plan, 10.0, 0.25, Budget(1.0), newcomer_lane=True)]
    assert lanes == [True, False]  # only its first window
    assert [j[3] for j in jobs_of(StreamPlan(plan.windows, 12.0), 10.0, 0.25, Budget(1.0), newcomer_lane=True)] == [
        False,
        False,
    ]  # a playing stream's windows go to the workers


def test_a_newcomer_lane_window_takes_its_cpu_from_now_not_at_its_deadline() -> None:
    # A running stream needs 0.25 s of CPU by 0.3; a newcomer's 0.2 s runs on the lane from now, done by 0.2 on a
    # whole core. One core cannot do both by 0.3 (0.45 s of CPU), though each fits by its own deadline alone.
    running = _jobs((0.3, 0.25))
    assert not fits([running, [(0.5, 0.2, 0.2, True)]], now=0.0, capacity=1.0)
    assert fits([running, [(0.5, 0.2, 0.2, True)]], now=0.0, capacity=2.0)
    # On a slow lane (0.8 s of wall, deadline 1.0) it has used 0.2 x 0.3 / 0.8 = 0.075 s by 0.3: 0.325 > 0.3.
    assert not fits([running, [(1.0, 0.2, 0.8, True)]], now=0.0, capacity=1.0)
    assert fits([_jobs((0.3, 0.2)), [(1.0, 0.2, 0.8, True)]], now=0.0, capacity=1.0)  # 0.275 <= 0.3
    # Its use stops growing when it is done: where nothing regular is due, only its own CPU counts.
    assert not fits([[(0.5, 0.3, 0.2, True)]], now=0.0, capacity=1.0)  # 0.3 s of CPU in 0.2 s on one core


def test_the_newcomer_lane_is_planned_on_only_while_the_machine_is_quiet() -> None:
    config = AdmissionConfig(first_audio_s=0.25, newcomer_lane=True)
    plan = StreamPlan((Window(1.0, 0.2),))
    busy_worker = StreamPlan((Window(1.0, 0.9),), next_due=10.0)  # a worker may be on it for 0.9 s
    quiet, busy = Budget(2.0), Budget(2.0, newcomer_lane=False)
    assert AdmissionController(config).admissible([busy_worker], [plan], 0.0, quiet) == 1
    # Without the lane, the newcomer may wait for the worker: 0.2 + 0.9 > 2 x 0.25.
    assert AdmissionController(config).admissible([busy_worker], [plan], 0.0, busy) == 0


def test_with_nothing_running_the_first_request_always_starts() -> None:
    # A budget that fits nothing (a wrongly learned cost): alone, a stream stalls nobody, so it starts anyway.
    plan = StreamPlan((Window(1.0, 0.5), Window(1.0, 0.5)))
    dear = Budget(0.1)
    assert controller().admissible([], [plan, plan], 0.0, dear) == 1
    assert controller().admissible([StreamPlan((Window(1.0, 0.5),), next_due=5.0)], [plan], 0.0, dear) == 0


def test_a_prediction_leaves_out_requests_it_would_keep_past_their_limit_in_one_pass() -> None:
    # One core; each request is 1 s of CPU for 1 s of audio, in one window: only one runs at a time.
    plan = StreamPlan((Window(1.0, 0.9),))
    ctl = controller()
    unlimited = ctl.predict_starts([], [plan] * 4, 0.0, Budget(1.0), horizon_s=60.0)
    assert unlimited == pytest.approx([0.0, 0.9, 1.8, 2.7])
    # The second may wait 0.5 s at most: left out at 0.9, so the third starts at 0.9 and the fourth at 1.8.
    limited = ctl.predict_starts([], [plan] * 4, 0.0, Budget(1.0), 60.0, start_limits=[None, 0.5, None, 2.0])
    assert limited == pytest.approx([0.0, 0.9, 0.9, 1.8])


def controller() -> AdmissionController:
    return AdmissionController(AdmissionConfig(first_audio_s=0.25))


def test_admissible_counts_the_prefix_that_keeps_everyone_in_time() -> None:
    newcomer = StreamPlan((Window(1.0, 0.2), Window(2.0, 0.3)))
    # Alone: 0.2 by 0.25, 0.5 by 1.25 -> fits. Two: 0.4 by 0.25 -> no. So one of three on one core.
    assert controller().admissible([], [newcomer, newcomer, newcomer], 0.0, Budget(1.0)) == 1
    assert controller().admissible([], [newcomer, newcomer, newcomer], 0.0, Budget(2.0)) == 2
    # Serving overhead is charged per second of audio: two first windows of 0.2 + 0.06 x 1 s each = 0.52 > 2 x 0.25.
    assert controller().admissible([], [newcomer] * 3, 0.0, Budget(2.0, overhead=0.06)) == 1
    late = StreamPlan((Window(1.0, 0.1),), next_due=-0.5)
    assert controller().admissible([late], [newcomer], 0.0, Budget(8.0)) == 0  # nobody starts while someone is late


def test_predicted_start_is_when_the_running_work_leaves_room() -> None:
    running = StreamPlan((Window(5.0, 0.9),), next_due=1.0)
    newcomer = StreamPlan((Window(1.0, 0.5),))
    # Now: 0.5 due at 0.5 and 0.9 more at 1.0 -> 1.4 > 1.0: wait. The running window is done at 0.9; from then
    # the newcomer's 0.5 is due at 1.4 -> fits. It starts at 0.9.
    budget = Budget(1.0)
    assert controller().admissible([running], [newcomer], 0.0, budget) == 0
    (start,) = controller().predict_starts([running], [newcomer], 0.0, budget, horizon_s=10.0)
    assert start == pytest.approx(0.9)
    # Two in the queue: the second waits for the first one's window too (0.9 + 0.5).
    starts = controller().predict_starts([running], [newcomer, newcomer], 0.0, budget, horizon_s=10.0)
    assert starts == pytest.approx([0.9, 1.4])
    assert controller().predict_starts([running], [newcomer], 0.0, budget, horizon_s=0.5) == [None]
    # With room to spare but one slot, held by the running stream until its last window is done (at 0.9).
    roomy = Budget(8.0)
    assert controller().predict_starts([running], [newcomer], 0.0, roomy, 10.0) == [0.0]
    assert controller().predict_starts([running], [newcomer], 0.0, roomy, 10.0, max_slots=1) == pytest.approx([0.9 / 8])


def test_load_model_learns_margin_and_speed() -> None:
    config = AdmissionConfig(margin_quantile=0.5, max_margin=3.0, min_speed=0.1)
    load = LoadModel(config)
    assert (load.margin, load.speed, load.wall_factor()) == (1.0, 1.0, 1.0)  # nothing learned: face value
    for estimated, cpu, wall in [(0.1, 0.12, 0.24), (0.1, 0.1, 0.2), (0.1, 0.2, 0.4)]:
        load.observe(estimated, cpu, wall)
    assert load.margin == pytest.approx(1.2)  # median of 1.2, 1.0, 2.0
    assert load.speed == pytest.approx(0.5)  # each step had half a core
    assert load.wall_factor() == pytest.approx(2.4)
    load.observe(0.1, 1.0, None)  # several slots at once: no speed reading, a margin reading of 10
    load.observe(0.1, 1.0, None)
    assert load.margin == pytest.approx(2.0)
    for _ in range(10):
        load.observe(0.1, 10.0, 1000.0)
    assert load.margin == 3.0 and load.speed == pytest.approx(0.1)  # clamped


def test_cpu_load_sees_another_process_spinning() -> None:
    """A real process keeping one core busy shows up as ~1 core of other processes' use."""
    import subprocess
    import sys

    if machine_cpu_s() is None:
        pytest.fail("/proc/stat is missing: this test needs Linux")
    load = CpuLoad(cores=2)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        start = time.monotonic()
        load.sample(start)
        for k in range(1, 4):
            time.sleep(1.0)
            load.sample(start + k * 1.05)
    finally:
        spinner.kill()
        spinner.wait()
    reading = load.reading()
    assert 0.6 < reading.others <= 2.0, reading  # the spinner (and whatever else this machine runs)
    assert reading.others >= BUSY_OTHERS_CORES  # busy: admission stops planning on the newcomer lane
    assert reading.left <= 2.0 - 0.6 + 1e-9


def test_a_hypervisors_steal_is_not_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steal (a VM's CPUs kept waiting by its host) takes cores from the workers' capacity, but the machine stays
    quiet for the newcomer lane: no process of this machine holds the cores. Read from a /proc/stat written here."""
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    monkeypatch.setattr(cpuload, "PROC_STAT", stat)

    def write(user: int, system: int, idle: int, steal: int) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice
        stat.write_text(f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")

    load = CpuLoad(cores=2)
    write(1000 * hz, 100 * hz, 5000 * hz, 10 * hz)
    assert cpuload.machine_cpu_s() == pytest.approx((1100.0, 10.0))
    start = time.monotonic()
    load.sample(start)
    for k in range(1, 12):  # each second: 0.1 core of other processes' user time, 0.8 core stolen
        write(1000 * hz + k * hz // 10, 100 * hz, 5000 * hz + k * hz, 10 * hz + k * 4 * hz // 5)
        load.sample(start + k)
    reading = load.reading()
    assert reading.stolen == pytest.approx(0.8, abs=0.01)
    # This process's own CPU (a few ms here) is taken off the machine's busy time; never below zero.
    assert 0.0 <= reading.others <= 0.1 + 1e-9
    assert reading.left == pytest.approx(2.0 - reading.others - reading.stolen)
    assert reading.others < BUSY_OTHERS_CORES  # quiet: the newcomer lane stays


def test_serving_overhead_is_this_process_beyond_its_workers_per_audio_second() -> None:
    load = CpuLoad(cores=2)
    start = time.monotonic()
    load.sample(start)
    busy_until = time.thread_time() + 0.3
    while time.thread_time() < busy_until:  # 0.3 s of this process's CPU that no worker reported
        pass
    load.note_step(cpu_s=0.0, audio_s=6.0)
    load.sample(start + 1.5)
    assert 0.3 * 0.2 / 6.0 * 0.9 < load.reading().overhead < 0.2 * (0.3 + 0.2) / 6.0  # a fifth of the first reading


def test_a_flood_of_cpu_without_audio_does_not_make_serving_look_dear_for_ever() -> None:
    load = CpuLoad(cores=2)
    start = time.monotonic()
    load.sample(start)
    busy_until = time.thread_time() + 0.3
    while time.thread_time() < busy_until:  # 0.3 s of CPU for half a second of audio: 0.6 per audio second
        pass
    load.note_step(cpu_s=0.0, audio_s=0.5)
    load.sample(start + 1.5)
    assert load.reading().overhead <= 0.2 * MAX_OVERHEAD + 1e-12  # capped
    high = load.reading().overhead
    for k in range(2, 6):  # intervals without audio: it fades
        load.sample(start + 1.5 * k)
    assert load.reading().overhead < high * 0.5


def _saturating_engine(max_queue_wait_s: float) -> tuple[Engine, FakePlannerBackend]:
    # Each step: 0.1 s of audio for 0.1 s of one worker's CPU. One stream takes the whole worker: while it runs,
    # nobody else can start without making it stutter.
    backend = FakePlannerBackend(cost_per_step=0.1, step_delay_s=0.1, default_max_slots=8)
    engine = make_engine(backend, max_slots=8, max_queue_wait_s=max_queue_wait_s, step_budget_s=0.1)
    assert engine.admission is not None
    return engine, backend


def _busy_engine(max_queue_wait_s: float) -> tuple[Engine, Forecast, Collector]:
    """A started saturating engine whose only worker plays a 2 s request (``first``), its first audio out."""
    engine, _ = _saturating_engine(max_queue_wait_s)
    assert engine.forecast is not None
    engine.start()
    _, first = submit(engine, " ".join(["word"] * 20), "first")  # 2 s of compute on the only worker
    deadline = time.monotonic() + 5
    while not first.outputs and time.monotonic() < deadline:
        time.sleep(0.01)
    return engine, engine.forecast, first


def test_a_request_that_would_wait_past_its_limit_is_refused_at_once() -> None:
    engine, _, first = _busy_engine(max_queue_wait_s=0.5)
    try:
        sent = time.monotonic()
        _, second = submit(engine, "two words", "second")
        wait_final([second])
        refused_after = time.monotonic() - sent
        wait_final([first])
    finally:
        engine.shutdown()
    assert first.status == RequestStatus.FINISHED_STOPPED
    assert second.status == RequestStatus.FINISHED_ERROR and second.final is not None
    error = second.final.error
    assert isinstance(error, QueueFullError) and error.status_code == 429
    assert 0.5 < error.retry_after_s < 5.0  # about when the first request is done
    assert refused_after < 0.5  # at once, not after waiting


def test_after_a_refusal_later_newcomers_are_refused_before_any_work() -> None:
    engine, forecast, first = _busy_engine(max_queue_wait_s=0.5)
    try:
        assert forecast.early_refusal(0, None) is None  # nobody was refused yet: a newcomer gets a prediction
        _, second = submit(engine, "two words", "second")
        wait_final([second])
        early = forecast.early_refusal(0, None)
        urgent = forecast.early_refusal(5, None)  # a higher priority would not queue behind the refused one
        patient = forecast.early_refusal(0, 30.0) if engine.config.max_queue_wait_s is None else None
        wait_final([first])
        time.sleep(0.1)
        after = forecast.early_refusal(0, None)
    finally:
        engine.shutdown()
    assert isinstance(second.final.error if second.final else None, QueueFullError)
    assert isinstance(early, QueueFullError) and early.status_code == 429
    assert 0.5 < early.retry_after_s < 5.0
    assert urgent is None and patient is None
    assert after is None  # the queue emptied: capacity is back


def test_a_request_within_its_limit_waits_with_an_eta_then_runs() -> None:
    engine, _, first = _busy_engine(max_queue_wait_s=20.0)
    try:
        sent = time.monotonic()
        req, second = submit(engine, "two words", "second")
        time.sleep(0.3)
        info = engine.status("second")
        wait_final([first, second])
    finally:
        engine.shutdown()
    assert second.status == RequestStatus.FINISHED_STOPPED
    assert info is not None and info.status == "waiting" and info.queue_position == 0
    assert info.eta_s is not None and 0.3 < info.eta_s < 5.0
    predicted = second.outputs[0].predicted_first_audio_s
    assert predicted is not None and req.first_audio_time is not None
    actual = req.first_audio_time - req.arrival_time
    assert actual > 1.0  # it did wait for the first request
    assert abs(actual - predicted) < 1.0, (actual, predicted)
    assert sent <= req.arrival_time


def test_behind_a_queue_each_character_being_prepared_ahead_adds_to_a_newcomers_wait() -> None:
    engine, forecast, first = _busy_engine(max_queue_wait_s=20.0)
    try:
        nobody_waits = forecast.early_refusal(0, None, chars_ahead=10_000)
        submit(engine, " ".join(["word"] * 10), "second")  # waits for the first: the queue has a tail now
        time.sleep(0.3)
        now = time.monotonic()
        behind_nobody = forecast.early_refusal(0, None)
        crowd = forecast.early_refusal(0, None, chars_ahead=2_000)  # ~40 s of these words' compute
        late = forecast.early_refusal(0, None, arrival=now - 19.5)  # it already waited 19.5 s of its 20
        urgent = forecast.early_refusal(5, None, arrival=now - 19.5)  # jumps the queue: only the crowd counts
        wait_final([first])
    finally:
        engine.shutdown()
    assert nobody_waits is None  # an idle queue says nothing about a crowd: the engine's own pass decides
    assert behind_nobody is None  # the tail (~3 s) is within 20 s
    assert isinstance(crowd, QueueFullError) and crowd.status_code == 429
    assert 30.0 < crowd.retry_after_s < 80.0  # the tail plus 2,000 characters at ~0.02 s each
    assert isinstance(late, QueueFullError) and 1.0 < late.retry_after_s < 5.0  # the tail: about when it starts
    assert urgent is None


def test_a_newcomer_queues_behind_those_being_prepared_before_it_of_no_lower_priority() -> None:
    preparing = Preparing()
    a = preparing.enter(0, 100)
    b = preparing.enter(5, 40)
    c = preparing.enter(-1, 7)
    assert preparing.chars_ahead(0) == 140  # not yet in line: behind everyone of priority >= 0
    assert preparing.chars_ahead(0, ticket=c) == 140 and preparing.chars_ahead(-1, ticket=c) == 140
    assert preparing.chars_ahead(0, ticket=b) == 100 and preparing.chars_ahead(5, ticket=b) == 0
    assert preparing.chars_ahead(5, ticket=a) == 0
    preparing.leave(a)
    preparing.leave(a)  # idempotent
    assert preparing.chars_ahead(-1) == 47 and len(preparing) == 2


def test_a_background_request_leaves_live_newcomers_the_whole_machine() -> None:
    # The only worker is taken by a 2 s request. A live one behind it would be refused (test above); a background
    # one (a batch job's item) is not planned on: the live newcomer starts at once and goes first.
    engine, _ = _saturating_engine(max_queue_wait_s=0.5)
    engine.start()
    try:
        _, job = submit(engine, " ".join(["word"] * 20), "job", background=True)
        deadline = time.monotonic() + 5
        while not job.outputs and time.monotonic() < deadline:
            time.sleep(0.01)
        _, live = submit(engine, "two words", "live")
        wait_final([live])
        assert job.status is None  # still running: the live request did not wait for it
        wait_final([job])
    finally:
        engine.shutdown()
    assert live.status == RequestStatus.FINISHED_STOPPED and job.status == RequestStatus.FINISHED_STOPPED
    assert engine.metrics.snapshot()["ttfa_s"]["count"] == 1  # type: ignore[index]  # the job's is nobody's TTFA


def test_the_workers_lead_setting_reaches_the_order_of_work_and_admission() -> None:
    backend = FakePlannerBackend(cost_per_step=0.1, step_delay_s=0.1, default_max_slots=8)
    settings = Settings(worker={"lead_ms": 300})  # type: ignore[arg-type]
    engine = Engine(backend, engine_config(settings, backend))
    assert engine.admission is not None
    assert engine.scheduler.config.lead == engine.admission.config.lead == Lead(max_s=0.3)
    # A playing stream's plan starts from its deadline with the lead it has by now, and carries what it sent.
    req = Request(SpeechInput("r", "one two three four", "fake"), sink=lambda _: None)
    (req.slot,) = backend.prefill([(req.input, None)])
    req.first_audio_time = time.monotonic()
    req.num_samples_sent = 800  # 0.8 s at 1 kHz: a lead of 0.2 s
    plan = engine.admission.running_plan(req, time.monotonic(), engine.admission.budget())
    assert plan.sent_s == pytest.approx(0.8)
    assert plan.next_due == pytest.approx(req.first_audio_time + 0.8 - 0.1 - 0.2)  # less 0.1 s delivery margin
