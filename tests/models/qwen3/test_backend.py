"""The Qwen3-TTS step loop on tiny random models (CPU, float64): exactness against the library and batch invariance."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from chorus.engine.request import RequestStatus
from chorus.models.base import SpeechInput, SynthesisParams
from chorus.models.qwen3.backend import Qwen3Backend, Qwen3Slot
from chorus.models.qwen3.chunks import SAMPLES_PER_FRAME
from tests.engine.helpers import Collector, make_engine, run_until_idle

GREEDY = SynthesisParams(temperature=0.0, language="english")
TEXT = "Hello there, this is a test of the engine."


def library_codes(backend: Qwen3Backend, call: Any, max_new_tokens: int) -> torch.Tensor:
    """Codes from the library's own generate(), greedy, caught on their way to the codec."""
    seen: list[torch.Tensor] = []
    tokenizer = backend.model.speech_tokenizer

    def record(items: list[dict[str, torch.Tensor]]) -> tuple[list[np.ndarray], int]:
        seen.extend(item["audio_codes"] for item in items)
        return [np.zeros(1, np.float32) for _ in items], 24_000

    tokenizer.decode = record
    try:
        call(max_new_tokens=max_new_tokens, do_sample=False, subtalker_dosample=False)
    finally:
        del tokenizer.decode
    return seen[0].cpu()


def frames_of(backend: Qwen3Backend, text: str, voice: str, params: SynthesisParams, steps: int) -> torch.Tensor:
    inp = SpeechInput("solo", text, voice, params)
    (slot,) = backend.prefill([(inp, backend.preprocess(inp))])
    assert isinstance(slot, Qwen3Slot)
    try:
        for _ in range(steps):
            if slot.is_finished:
                break
            backend.step([slot])
    finally:
        backend.release(slot)
    return torch.stack(slot.frames)


def test_step_loop_matches_the_library_generate(custom_voice: Qwen3Backend) -> None:
    ours = frames_of(custom_voice, TEXT, "ryan", GREEDY, steps=12)
    theirs = library_codes(
        custom_voice,
        lambda **kw: custom_voice.tts.generate_custom_voice(text=TEXT, speaker="ryan", language="english", **kw),
        max_new_tokens=ours.shape[0] + 1,
    )
    assert theirs.shape == ours.shape
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=0, atol=0)


def test_clone_step_loop_matches_the_library_generate(base: Qwen3Backend) -> None:
    ours = frames_of(base, TEXT, "narrator", GREEDY, steps=10)
    _, items = base._clones["narrator"]
    theirs = library_codes(
        base,
        lambda **kw: base.tts.generate_voice_clone(text=TEXT, language="english", voice_clone_prompt=items, **kw),
        max_new_tokens=ours.shape[0] + 1,
    )
    reference_frames = items[0].ref_code.shape[0]  # the library decodes the reference codes in front
    torch.testing.assert_close(ours, theirs[reference_frames:].to(ours.dtype), rtol=0, atol=0)


def run_alone(backend: Qwen3Backend, text: str, voice: str, params: SynthesisParams) -> Collector:
    engine = make_engine(backend, max_slots=backend.max_slots, max_frames=24)
    _, sink = submit_voice(engine, text, "main", voice, params)
    run_until_idle(engine)
    return sink


def submit_voice(engine: Any, text: str, rid: str, voice: str, params: SynthesisParams) -> tuple[Any, Collector]:
    from chorus.engine.request import Request

    sink = Collector()
    inp = SpeechInput(rid, text, voice, params)
    req = Request(inp, sink, prepared=engine.backend.preprocess(inp))
    engine.add_request(req)
    return req, sink


@pytest.mark.parametrize(
    "params", [GREEDY, SynthesisParams(temperature=0.9, top_k=20, top_p=0.9, seed=7)], ids=["greedy", "seeded"]
)
@pytest.mark.parametrize(
    ("fixture", "voice", "others"),
    [
        ("custom_voice", "ryan", ["vivian", "aiden", "serena"]),
        ("base", "narrator", ["xvec", "narrator", "xvec"]),
    ],
)
def test_audio_is_identical_alone_and_with_others_joining_and_leaving(
    request: pytest.FixtureRequest, fixture: str, voice: str, others: list[str], params: SynthesisParams
) -> None:
    backend: Qwen3Backend = request.getfixturevalue(fixture)
    alone = run_alone(backend, TEXT, voice, params)
    engine = make_engine(backend, max_slots=backend.max_slots, max_frames=24)
    _, main = submit_voice(engine, TEXT, "main", voice, params)
    neighbours = SynthesisParams(temperature=0.9, seed=99, language="english")
    for step in range(40):
        if step == 1:
            submit_voice(engine, "A short one.", "o1", others[0], neighbours)
        if step == 3:
            submit_voice(engine, "A much longer neighbour that keeps going for a while.", "o2", others[1], GREEDY)
        if step == 5:
            engine.abort("o2")  # leaves mid-generation
        if step == 7:
            submit_voice(engine, "Late.", "o3", others[2], neighbours)
        engine.step()
    run_until_idle(engine)
    assert main.status == alone.status == RequestStatus.FINISHED_STOPPED
    assert main.audio().size == alone.audio().size > 0
    np.testing.assert_array_equal(main.audio(), alone.audio())
    assert backend._num_rows == 0  # every row was given back


def test_static_batch_gives_the_same_audio(custom_voice: Qwen3Backend) -> None:
    alone = run_alone(custom_voice, TEXT, "ryan", GREEDY)
    engine = make_engine(custom_voice, max_slots=4, max_frames=24, mode="static")
    _, main = submit_voice(engine, TEXT, "main", "ryan", GREEDY)
    for i, voice in enumerate(["vivian", "eric", "sohee"]):
        submit_voice(engine, "Another request in the batch." * (i + 1), f"o{i}", voice, GREEDY)
    run_until_idle(engine)
    np.testing.assert_array_equal(main.audio(), alone.audio())


def test_max_frames_and_the_text_budget_stop_runaway_requests(custom_voice: Qwen3Backend) -> None:
    engine = make_engine(custom_voice, max_slots=4, max_frames=7)
    _, capped = submit_voice(engine, TEXT * 4, "capped", "ryan", GREEDY)
    run_until_idle(engine)
    assert capped.status == RequestStatus.FINISHED_STOPPED
    assert capped.audio().size == 7 * SAMPLES_PER_FRAME
    inp = SpeechInput("tiny", "Hi.", "ryan", GREEDY)
    prepared = custom_voice.preprocess(inp)
    assert prepared.frame_budget < 100  # a three-character text may not run for minutes


def test_streaming_chunks_first_short_then_growing(custom_voice: Qwen3Backend) -> None:
    sink = run_alone(custom_voice, TEXT, "ryan", GREEDY)
    sizes = [o.audio.size // SAMPLES_PER_FRAME for o in sink.outputs if o.audio.size]
    every = custom_voice.emit_every_frames
    assert sizes[:3] == [custom_voice.first_emit_frames, every, 2 * every]
    assert sum(sizes) == 24  # max_frames: every frame is emitted exactly once
    assert np.abs(sink.audio()).mean() > 1e-3  # the tiny codec makes sound, not zeros


def test_abort_frees_the_row_and_rows_stay_packed(custom_voice: Qwen3Backend) -> None:
    engine = make_engine(custom_voice, max_slots=4, max_frames=50)
    for i, voice in enumerate(["ryan", "vivian", "aiden"]):
        submit_voice(engine, TEXT, f"r{i}", voice, GREEDY)
    engine.step()
    engine.step()
    assert custom_voice._num_rows == 3
    engine.abort("r0")
    engine.step()
    assert custom_voice._num_rows == 2
    rows = sorted(s.row for s in custom_voice._owner if s is not None)
    assert rows == [0, 1]
    engine.abort("r1")
    engine.abort("r2")
    run_until_idle(engine)
    assert custom_voice._num_rows == 0


def test_clone_prompt_features_are_computed_once_per_voice(base: Qwen3Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = base.tts.create_voice_clone_prompt

    def counted(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(base.tts, "create_voice_clone_prompt", counted)
    for i in range(3):
        base.preprocess(SpeechInput(f"r{i}", TEXT, "narrator", GREEDY))
    assert calls == []


def test_unknown_voice_and_language_are_value_errors(custom_voice: Qwen3Backend, base: Qwen3Backend) -> None:
    with pytest.raises(ValueError):
        custom_voice.preprocess(SpeechInput("x", TEXT, "nobody", GREEDY))
    with pytest.raises(ValueError):
        custom_voice.preprocess(SpeechInput("x", TEXT, "ryan", SynthesisParams(language="klingon")))
    with pytest.raises(ValueError):
        base.preprocess(SpeechInput("x", TEXT, "nobody", GREEDY))


def test_eos_stops_a_request_and_flushes_its_audio(tmp_path: Any) -> None:
    from chorus.testing.qwen3_tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "eos", kind="custom_voice", seed=3, eos_bias=5.0)
    backend = Qwen3Backend(path, dtype=torch.float64, max_slots=2, max_len=512)
    engine = make_engine(backend, max_slots=2, max_frames=50)
    _, sink = submit_voice(engine, TEXT, "eos", "ryan", GREEDY)
    run_until_idle(engine)
    assert sink.status == RequestStatus.FINISHED_STOPPED
    # The library allows EOS from the third sampled code on: two frames, both emitted (none left undecoded).
    assert sink.audio().size == 2 * SAMPLES_PER_FRAME


SEEDED = SynthesisParams(temperature=0.9, top_k=20, top_p=0.9, seed=7, language="english")


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_audio_is_identical_when_its_kv_row_moves(custom_voice: Qwen3Backend, params: SynthesisParams) -> None:
    """A request below it finishes: the compared request's KV row (and repetition-penalty row) moves to the freed
    row mid-generation, and its audio still equals the alone run."""
    params = dataclasses.replace(params, repetition_penalty=1.5)  # strong enough that a lost history shows
    alone = run_alone(custom_voice, TEXT, "ryan", params)
    engine = make_engine(custom_voice, max_slots=custom_voice.max_slots, max_frames=24)
    neighbours = SynthesisParams(temperature=0.9, seed=99, language="english")
    submit_voice(engine, "The one below.", "below", "vivian", neighbours)  # row 0: reaches the cap first
    for _ in range(8):  # the move comes at main's frame 16: before the codes it would repeat, after their first draw
        engine.step()
    req, main = submit_voice(engine, TEXT, "main", "ryan", params)
    rows = []
    while engine.has_work():
        engine.step()
        if isinstance(req.slot, Qwen3Slot) and req.slot.row >= 0:
            rows.append(req.slot.row)
    assert rows[0] == 1 and rows[-1] == 0  # it did move
    assert main.status == alone.status == RequestStatus.FINISHED_STOPPED
    np.testing.assert_array_equal(main.audio(), alone.audio())


def test_unseeded_requests_draw_their_own_random_streams(custom_voice: Qwen3Backend) -> None:
    unseeded = SynthesisParams(temperature=0.9, language="english")
    a = frames_of(custom_voice, TEXT, "ryan", unseeded, steps=6)
    b = frames_of(custom_voice, TEXT, "ryan", unseeded, steps=6)
    assert not torch.equal(a, b)
    assert torch.equal(
        frames_of(custom_voice, TEXT, "ryan", SEEDED, steps=6), frames_of(custom_voice, TEXT, "ryan", SEEDED, steps=6)
    )


@pytest.mark.parametrize("cap", [6, 12])
def test_max_emit_frames_caps_the_chunk_growth(custom_voice_dir: Any, cap: int) -> None:
    backend = Qwen3Backend(
        custom_voice_dir, dtype=torch.float64, max_slots=2, max_len=1024, first_emit_frames=2, max_emit_frames=cap
    )
    engine = make_engine(backend, max_slots=2, max_frames=40)
    _, sink = submit_voice(engine, TEXT, "main", "ryan", GREEDY)
    run_until_idle(engine)
    sizes = [o.audio.size // SAMPLES_PER_FRAME for o in sink.outputs if o.audio.size]
    assert sizes[:2] == [2, backend.emit_every_frames]
    assert max(sizes) == cap  # the default cap (4 x 6 = 24) would let the chunks grow to 20 here
    assert sizes[1:-1] == sorted(sizes[1:-1])  # growing up to the cap, never shrinking but for the last
    assert sum(sizes) == 40
