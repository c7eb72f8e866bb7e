"""Picking slots on a compute-bound backend: earliest playback deadline first, within the budget."""

from __future__ import annotations

import time

from chorus.engine.request import Lead, Request
from chorus.engine.scheduler import Scheduler, SchedulerConfig
from chorus.models.base import SpeechInput
from tests.fakes import FakeSlot


def _running(scheduler: Scheduler, rid: str, *, first_audio_ago: float | None, sent_s: float) -> Request:
    now = time.monotonic()
    req = Request(SpeechInput(rid, "x", "fake"), sink=lambda _: None, arrival_time=now - 30)
    req.sequence = len(scheduler.running)
    req.first_audio_time = None if first_audio_ago is None else now - first_audio_ago
    req.num_samples_sent = int(sent_s * 1000)
    req.slot = FakeSlot(rid, text="x", total=10)
    scheduler.add(req)
    return req


def test_budget_takes_the_earliest_deadlines_and_newcomers_first() -> None:
    config = SchedulerConfig(max_slots=8)
    scheduler = Scheduler(config, cost=lambda _: 0.01, sample_rate=1000)
    _running(scheduler, "comfortable", first_audio_ago=1.0, sent_s=9.0)  # 8 s of audio buffered
    _running(scheduler, "almost-dry", first_audio_ago=5.0, sent_s=5.2)  # 0.2 s left
    _running(scheduler, "newcomer", first_audio_ago=None, sent_s=0.0)  # no audio yet: due 0.25 s after admission
    _running(scheduler, "some-slack", first_audio_ago=2.0, sent_s=4.0)  # 2 s left
    scheduler.admit()
    picked = [r.request_id for r in scheduler.pick(0.02)]
    assert picked == ["almost-dry", "newcomer"]  # two slots fit 0.02 s at 0.01 s each; running dry goes first


def test_a_segment_that_plays_later_waits_for_its_turn() -> None:
    # A voice-agent session's next segment plays when the previous one runs out (plays_at): before that it is
    # less urgent than a newcomer, and once it plays its deadlines count from then, not from its first audio.
    config = SchedulerConfig(max_slots=8)
    scheduler = Scheduler(config, cost=lambda _: 0.01, sample_rate=1000)
    now = time.monotonic()
    later = _running(scheduler, "next-segment", first_audio_ago=None, sent_s=0.0)
    later.plays_at = now + 3.0
    _running(scheduler, "newcomer", first_audio_ago=None, sent_s=0.0)
    scheduler.admit()
    assert [r.request_id for r in scheduler.pick(0.01)] == ["newcomer"]
    assert later.deadline(1000, 0.25) >= now + 3.0
    later.first_audio_time, later.num_samples_sent = now, 1000  # 1 s of it made, playing from plays_at
    assert abs(later.deadline(1000, 0.25) - (now + 4.0)) < 1e-6


def test_a_playing_sessions_next_segment_is_admitted_before_newcomers() -> None:
    scheduler = Scheduler(SchedulerConfig(max_slots=1), cost=lambda _: 0.01, sample_rate=1000)
    now = time.monotonic()
    newcomer = Request(SpeechInput("newcomer", "x", "fake"), sink=lambda _: None, arrival_time=now - 1)
    following = Request(SpeechInput("following", "x", "fake"), sink=lambda _: None, arrival_time=now, plays_at=now + 2)
    newcomer.sequence, following.sequence = 1, 2
    scheduler.add(newcomer)
    scheduler.add(following)
    assert [r.request_id for r in scheduler.admit()] == ["following"]  # it came later, but its stream is playing


def test_without_a_budget_every_running_slot_steps() -> None:  # the GPU case
    scheduler = Scheduler(SchedulerConfig(max_slots=8), cost=lambda _: 1.0, sample_rate=1000)
    for i in range(5):
        _running(scheduler, f"r{i}", first_audio_ago=None, sent_s=0)
    scheduler.admit()
    assert len(scheduler.pick()) == 5


def test_at_least_one_slot_steps_even_over_budget() -> None:
    config = SchedulerConfig(max_slots=8)
    scheduler = Scheduler(config, cost=lambda _: 5.0, sample_rate=1000)
    _running(scheduler, "big", first_audio_ago=None, sent_s=0)
    scheduler.admit()
    assert [r.request_id for r in scheduler.pick(0.001)] == ["big"]


def test_audio_held_back_above_the_engine_makes_a_stream_due_earlier() -> None:
    # A client resampled to another rate gets its audio later than the engine made it (the resampler's filter
    # delay): its next audio is due that much earlier, while it plays and when it is a session's next segment.
    scheduler = Scheduler(SchedulerConfig(max_slots=8), cost=lambda _: 0.01, sample_rate=1000)
    playing = _running(scheduler, "playing", first_audio_ago=1.0, sent_s=3.0)
    plain = playing.deadline(1000, 0.25, margin_s=0.1)
    playing.hold_back_s = 0.04
    assert abs(playing.deadline(1000, 0.25, margin_s=0.1) - (plain - 0.04)) < 1e-9
    following = _running(scheduler, "following", first_audio_ago=None, sent_s=0.0)
    following.plays_at = time.monotonic() + 3.0
    plain = following.deadline(1000, 0.25, margin_s=0.1)
    following.hold_back_s = 0.04
    assert abs(following.deadline(1000, 0.25, margin_s=0.1) - (plain - 0.04)) < 1e-9


def test_next_urgent_at_is_when_the_first_playing_stream_must_start_within_the_horizon() -> None:
    config = SchedulerConfig(max_slots=8, step_budget_s=0.01)
    scheduler = Scheduler(config, cost=lambda _: 0.05, sample_rate=1000)
    assert scheduler.next_urgent_at(0.15) is None  # nobody runs
    _running(scheduler, "newcomer", first_audio_ago=None, sent_s=0.0)  # newcomers have their own lane
    scheduler.admit()
    assert scheduler.next_urgent_at(0.15) is None
    soon = _running(scheduler, "soon", first_audio_ago=1.0, sent_s=1.5)  # runs dry in 0.5 s
    _running(scheduler, "later", first_audio_ago=1.0, sent_s=4.0)  # in 3 s
    scheduler.admit()
    now = time.monotonic()
    # dry in 0.5 s, less its 0.05 s step, less the 0.15 s horizon
    assert abs(scheduler.next_urgent_at(0.15) - (now + 0.3)) < 0.01  # type: ignore[operator]
    soon.in_flight = True  # a worker has it already
    assert abs(scheduler.next_urgent_at(0.15) - (now + 2.8)) < 0.01  # type: ignore[operator]
    unbudgeted = Scheduler(SchedulerConfig(max_slots=8), cost=lambda _: 0.05, sample_rate=1000)
    _running(unbudgeted, "playing", first_audio_ago=1.0, sent_s=1.5)
    unbudgeted.admit()
    assert unbudgeted.next_urgent_at(0.15) is None  # every running slot steps each time: nothing to wait for


def test_a_playing_stream_is_kept_its_lead_ahead_but_is_urgent_only_when_about_to_run_dry() -> None:
    lead = Lead(max_s=0.5, rate=0.25)
    assert [lead(s) for s in (0.0, 1.0, 2.0, 8.0, -1.0)] == [0.0, 0.25, 0.5, 0.5, 0.0]
    config = SchedulerConfig(max_slots=8, step_budget_s=0.01, lead=lead)
    scheduler = Scheduler(config, cost=lambda _: 0.01, sample_rate=1000)
    # "young" has 0.3 s left and 1 s sent (lead 0.25): due in 0.05 s; "old" has 0.4 s left and 8 s sent (lead
    # 0.5): due 0.1 s ago. Work goes by the lead ("old" first); the urgent lanes by running dry ("young" first).
    young = _running(scheduler, "young", first_audio_ago=0.7, sent_s=1.0)
    old = _running(scheduler, "old", first_audio_ago=7.6, sent_s=8.0)
    scheduler.admit()
    now = time.monotonic()
    assert abs(young.deadline(1000, lead=lead) - (now + 0.05)) < 0.01
    assert abs(old.deadline(1000, lead=lead) - (now - 0.1)) < 0.01
    assert [r.request_id for r in scheduler.pick(0.03)] == ["old", "young"]
    assert [r.request_id for r in scheduler.pick(0.03, urgent_within_s=0.35)] == ["young"]
    assert [r.request_id for r in scheduler.pick(0.03, urgent_within_s=0.45)] == ["old", "young"]
    # next_urgent_at: "young" runs dry in 0.3 s, less its 0.01 s step and the 0.15 s horizon
    assert abs(scheduler.next_urgent_at(0.15) - (now + 0.14)) < 0.01  # type: ignore[operator]
    young.in_flight = True
    assert abs(scheduler.next_urgent_at(0.15) - (now + 0.24)) < 0.01  # type: ignore[operator]
    # A newcomer has sent nothing: no lead yet, its deadline is its first-audio target.
    newcomer = _running(scheduler, "newcomer", first_audio_ago=None, sent_s=0.0)
    scheduler.admit()
    assert newcomer.deadline(1000, 0.25, lead=lead) == newcomer.deadline(1000, 0.25)


def test_slack_is_the_most_pressed_requests_time_to_spare_without_the_lead() -> None:
    lead = Lead(max_s=0.5, rate=0.25)
    config = SchedulerConfig(max_slots=8, step_budget_s=0.01, delivery_margin_s=0.1, lead=lead)
    scheduler = Scheduler(config, cost=lambda _: 0.05, sample_rate=1000)
    # dry in 2 s, less the 0.1 s margin and its 0.05 s step (its 0.5 s lead is not counted): 1.85 s to spare
    ahead = _running(scheduler, "ahead", first_audio_ago=2.0, sent_s=4.0)
    # dry in 0.3 s: 0.15 s to spare
    pressed = _running(scheduler, "pressed", first_audio_ago=1.0, sent_s=1.3)
    newcomer = _running(scheduler, "newcomer", first_audio_ago=None, sent_s=0.0)
    scheduler.admit()
    assert abs(scheduler.slack_s([ahead]) - 1.85) < 0.01
    assert abs(scheduler.slack_s([pressed]) - 0.15) < 0.01
    assert abs(scheduler.slack_s([ahead, pressed]) - 0.15) < 0.01  # a batch: its most pressed member
    assert scheduler.slack_s([newcomer]) == 0.0 and scheduler.slack_s([ahead, newcomer]) == 0.0  # no audio yet
    assert scheduler.slack_s([]) == 0.0
