"""`chorus bench-agent`: LLM-like tokens, the first segment the server speaks, in-order playback of the baseline's
sentences, sentence audio found from timestamps, and a `--quick` run measuring both systems end to end."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from chorus.bench.agent import run
from chorus.bench.agent_report import Trace, contiguous, sentence_audio_at, session_metrics
from chorus.bench.agent_sessions import first_segment_token, llm_tokens, make_plan
from chorus.bench.corpus import text_for

TEXT = "The morning train was late again, so she read the paper on the platform. Nobody expected it."


def test_tokens_are_small_pieces_with_leading_spaces_that_join_back() -> None:
    tokens = llm_tokens(TEXT)
    assert "".join(tokens) == TEXT
    assert tokens[:4] == ["The", " morn", "ing", " train"]
    assert "," in tokens and "." in tokens  # punctuation on its own
    texts = [llm_tokens(text_for(i)) for i in range(20)]
    mean = sum(len("".join(t)) for t in texts) / sum(len(t) for t in texts)
    assert 3.0 < mean < 5.5


def test_the_first_segment_ends_at_the_servers_first_cut() -> None:
    tokens = llm_tokens(TEXT)
    assert "".join(tokens[: first_segment_token(tokens) + 1]) == "The morning train was late again,"
    short = llm_tokens("Yes, of course. It is done.")  # a comma after one word is no cut: the sentence end is
    assert "".join(short[: first_segment_token(short) + 1]) == "Yes, of course."


def test_a_plan_marks_every_sentence_and_paces_tokens_in_range() -> None:
    plan = make_plan(3, random.Random(1))
    assert len(plan.sentence_tokens) >= 2
    assert all(plan.tokens[i] in (".", "!", "?") for i in plan.sentence_tokens)
    assert plan.sentence_tokens[-1] == len(plan.tokens) - 1
    assert 15 <= plan.rate_tps <= 40
    assert plan.due_s == sorted(plan.due_s)
    assert sum(plan.sentence_words) == len(plan.text.split())


def _trace(system: str, **kw: object) -> Trace:
    return Trace(system, 0, 20.0, 0, [0, 1], [2, 2], 100.0, **kw)  # type: ignore[arg-type]  # 1 s = 100 bytes


def test_baseline_sentences_play_in_order_and_a_late_one_is_a_gap() -> None:
    # Sentence 1 arrives whole before sentence 0 has ended: it can only play after sentence 0.
    early = _trace("baseline", pieces=[(0.0, 0, 100), (0.1, 1, 100)], ends={0: 0.5, 1: 0.2})
    assert contiguous(early) == [(0.0, 1.0), (0.5, 2.0)]
    assert session_metrics(early)["underruns"] == 0
    # Sentence 1's first byte comes 0.5 s after sentence 0 (1 s of audio) ran out: one 0.5 s stall.
    late = _trace("baseline", sent=[0.0, 0.0], pieces=[(0.0, 0, 100), (1.5, 1, 100)], ends={0: 0.1, 1: 1.6})
    m = session_metrics(late)
    assert (m["underruns"], m["stall_s"]) == (1, 0.5)
    assert m["sentence_to_audio_s"] == [1.5]


def test_chorus_sentence_audio_is_the_piece_holding_its_first_word() -> None:
    words = [{"word": w, "start_s": s, "end_s": s + 0.2} for w, s in (("a", 0.0), ("b", 0.3), ("c", 1.2), ("d", 1.6))]
    pieces = [(0.5, 0, 100), (0.7, 0, 100), (0.9, 0, 100)]  # 100 bytes/s of s16le: 1 s each
    trace = _trace("chorus", pieces=pieces, words=words)
    assert sentence_audio_at(trace) == [0.5, 0.7]
    assert sentence_audio_at(_trace("chorus", pieces=pieces, words=words[:3])) == [None, None]  # words missing


def test_a_quick_run_measures_both_systems(tmp_path: Path) -> None:
    args = argparse.Namespace(
        sessions="2", repeats=1, timestamp_sentences=3, seed=0, arrival_s=10.0, out=tmp_path, quick=True
    )
    assert run(args) == 0
    report = json.loads((tmp_path / "agent.json").read_text())
    runs = report["runs"]
    assert sorted((r["system"], r["kind"]) for r in runs) == [
        ("baseline", "barge_in"),
        ("baseline", "stream"),
        ("chorus", "barge_in"),
        ("chorus", "stream"),
    ]
    for r in runs:
        assert len(r["sessions"]) == 2
        for s in r["sessions"]:
            assert s["errors"] == 0, s["error_samples"]
            assert 0 < s["first_token_to_audio_s"] < 10
            assert 0 < s["first_clause_to_audio_s"] <= s["first_token_to_audio_s"]
            if r["kind"] == "stream":
                assert s["requests"] == s["requests_ok"] >= 1
                assert s["audio_s"] > 5  # a ~10 s paragraph, all of it
                # Every later sentence located (chorus may speak one's first clause before it ends: then < 0).
                assert s["sentence_to_audio_s"] and all(v is not None for v in s["sentence_to_audio_s"])
                if r["system"] == "baseline":
                    assert all(v > 0 for v in s["sentence_to_audio_s"])
                assert s["underruns"] >= 0
            else:
                assert s["done_status"] == "cancelled"
                assert s["audio_before_cancel_s"] >= 1.5
                assert s["cancel_to_last_audio_s"] is not None and s["cancel_to_done_s"] is not None
                assert s["audio_s"] < 6  # the rest of the paragraph never came
        if r["kind"] == "barge_in":
            assert r["idle_after_s"] is not None
    summary = report["summary"]["2"]
    assert summary["chorus"]["barge_cancel_to_done_s_p50"]["median"] is not None
    assert summary["baseline"]["first_clause_to_audio_s_p50"]["median"] is not None
    ts = report["timestamps"]
    assert ts["sentences"] == 3 and ts["words"] > 0
    assert 0 <= ts["end_mae_s"] < 0.2
    assert (tmp_path / "agent.png").stat().st_size > 0
    assert "**N = 2 concurrent sessions**" in (tmp_path / "agent.md").read_text()
