"""Multi-LoRA serving on a tiny Base model (CPU, float64, greedy): rows with different adapters (and none) share one
batched step and each gets exactly the codes it gets alone on a model with its adapter merged into the weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chorus.models.base import ReferenceVoice, SpeechInput, SynthesisParams
from chorus.models.cloning.voice_model import VoiceModelFormatError
from chorus.models.qwen3.adapter import AdapterFormatError, load_adapter, save_adapter
from chorus.models.qwen3.backend import SAMPLE_RATE, Qwen3Backend, Qwen3Slot
from chorus.models.qwen3.lora import AdapterCapacityError
from tests.models.qwen3.conftest import reference_audio

GREEDY = SynthesisParams(temperature=0.0, language="english")
TEXTS = ["Hello there, this is the first voice.", "A second line, said differently.", "Third.", "And the plain one."]
STEPS = 8


def random_adapter(backend: Qwen3Backend, seed: int, rank: int = 4, alpha: float = 8.0) -> bytes:
    """A LoRA adapter over every adaptable layer, large enough to change the codes."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for path, layer in backend.adapters.layers.items():
        out_features, in_features = layer.base.weight.shape
        a = torch.randn(rank, in_features, generator=g) / in_features**0.5
        b = torch.randn(out_features, rank, generator=g) * 0.3
        weights[path] = (a, b)
    return save_adapter(weights, rank=rank, alpha=alpha, base=backend.digest)


def reference(voice_id: str) -> ReferenceVoice:
    return ReferenceVoice(voice_id, reference_audio(seed=5), SAMPLE_RATE, None, "english")


def new_backend(path: Path, max_adapters: int = 4) -> Qwen3Backend:
    return Qwen3Backend(
        path, dtype=torch.float64, max_slots=6, max_len=1024, keep_frames=True, max_adapters=max_adapters
    )


def run(backend: Qwen3Backend, jobs: list[tuple[str, str]]) -> list[torch.Tensor]:
    """(text, voice) requests as one batch from the first step: each one's frames [STEPS, 16]."""
    inputs = [(SpeechInput(f"r{i}", text, voice, GREEDY), None) for i, (text, voice) in enumerate(jobs)]
    slots = backend.prefill([(inp, backend.preprocess(inp)) for inp, _ in inputs])
    try:
        for _ in range(STEPS):
            running = [s for s in slots if not s.is_finished]  # as the engine does: a finished slot leaves
            if not running:
                break
            backend.step(running)
    finally:
        for slot in slots:
            backend.release(slot)
    frames = []
    for slot in slots:
        assert isinstance(slot, Qwen3Slot)
        frames.append(torch.stack(slot.frames))
    return frames


@pytest.fixture(scope="module")
def adapters(base_dir: Path) -> list[bytes]:
    backend = new_backend(base_dir)
    return [random_adapter(backend, seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def served(base_dir: Path, adapters: list[bytes]) -> Qwen3Backend:
    backend = new_backend(base_dir)
    backend.load_voice("plain", backend.build_voice(reference("plain")))
    for i, adapter in enumerate(adapters):
        backend.load_voice(f"tuned{i}", backend.build_lora_voice(reference(f"tuned{i}"), adapter))
    return backend


def merged_alone(base_dir: Path, adapter: bytes | None, text: str) -> torch.Tensor:
    """The reference: a fresh model with the adapter's delta added to its weights, the request on its own."""
    backend = new_backend(base_dir)
    if adapter is not None:
        parsed = load_adapter(adapter, base=backend.digest)
        with torch.no_grad():
            for path, layer in backend.adapters.layers.items():
                layer.base.weight += parsed.delta(path).to(layer.base.weight.dtype)
    backend.load_voice("solo", backend.build_voice(reference("solo")))
    (frames,) = run(backend, [(text, "solo")])
    return frames


def test_a_batch_of_three_adapters_and_none_matches_each_alone_merged(
    served: Qwen3Backend, base_dir: Path, adapters: list[bytes]
) -> None:
    voices = ["tuned0", "tuned1", "tuned2", "plain"]
    batched = run(served, list(zip(TEXTS, voices, strict=True)))
    for frames, text, adapter in zip(batched, TEXTS, [*adapters, None], strict=True):
        torch.testing.assert_close(frames, merged_alone(base_dir, adapter, text), rtol=0, atol=0)
    # The adapters do change the speech: the same text gives other codes with each adapter.
    same_text = run(served, [(TEXTS[0], v) for v in voices])
    assert len({tuple(f.flatten().tolist()) for f in same_text}) == 4


def test_evicting_and_reloading_an_adapter_changes_nothing(base_dir: Path, adapters: list[bytes]) -> None:
    backend = new_backend(base_dir, max_adapters=2)  # three adapters through two entries: each is evicted in turn
    for i, adapter in enumerate(adapters):
        backend.load_voice(f"tuned{i}", backend.build_lora_voice(reference(f"tuned{i}"), adapter))
    first = [run(backend, [(TEXTS[0], f"tuned{i}")])[0] for i in range(3)]
    assert backend.adapters.loads == 3
    again = [run(backend, [(TEXTS[0], f"tuned{i}")])[0] for i in range(3)]
    assert backend.adapters.loads == 6  # every one was cold again
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    hot = run(backend, [(TEXTS[0], "tuned2")])[0]  # still resident: no load
    assert backend.adapters.loads == 6
    torch.testing.assert_close(hot, first[2], rtol=0, atol=0)


def test_a_deleted_voice_leaves_the_device_even_while_it_was_speaking(base_dir: Path, adapters: list[bytes]) -> None:
    backend = new_backend(base_dir, max_adapters=2)
    backend.load_voice("tuned0", backend.build_lora_voice(reference("tuned0"), adapters[0]))
    inp = SpeechInput("r", TEXTS[0], "tuned0", GREEDY)
    (slot,) = backend.prefill([(inp, backend.preprocess(inp))])
    assert backend.adapters.resident() == ["tuned0"]
    backend.unload_voice("tuned0")
    assert not backend.has_voice("tuned0")
    backend.step([slot])  # the running stream keeps its adapter to the end
    assert "tuned0" not in backend.adapters.resident()
    backend.release(slot)
    assert backend.adapters.resident() == []
    with pytest.raises(ValueError, match="unknown voice"):
        backend.preprocess(inp)


def test_more_adapters_in_one_batch_than_entries_is_a_clear_error(base_dir: Path, adapters: list[bytes]) -> None:
    backend = new_backend(base_dir, max_adapters=1)
    for i, adapter in enumerate(adapters[:2]):
        backend.load_voice(f"tuned{i}", backend.build_lora_voice(reference(f"tuned{i}"), adapter))
    inputs = [SpeechInput(f"r{i}", TEXTS[i], f"tuned{i}", GREEDY) for i in range(2)]
    with pytest.raises(AdapterCapacityError, match="max_adapters"):
        backend.prefill([(inp, backend.preprocess(inp)) for inp in inputs])
    assert backend._num_rows == 0  # the slot made before the error was given back
    run(backend, [(TEXTS[1], "tuned1")])  # and the pool still works


def test_an_adapter_for_another_checkpoint_or_damaged_bytes_is_refused(
    served: Qwen3Backend, adapters: list[bytes]
) -> None:
    parsed = load_adapter(adapters[0])
    foreign = save_adapter(parsed.weights, rank=parsed.rank, alpha=parsed.alpha, base="0123456789abcdef")
    with pytest.raises(AdapterFormatError, match=r"trained on checkpoint"):
        served.build_lora_voice(reference("x"), foreign)
    with pytest.raises(AdapterFormatError):
        load_adapter(b"not an adapter at all")
    good = served.build_lora_voice(reference("x"), adapters[0])
    with pytest.raises(VoiceModelFormatError):
        served.load_voice("x", good[:-40])  # a truncated blob is a format error, not a crash
