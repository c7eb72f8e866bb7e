"""The Piper flow on its own: exact windows with the context from its receptive field, a request's first window
running only the flow it needs (same audio), admission pricing exactly the flow the steps run, and graphs whose
flow cannot be windowed or split running as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from chorus.models.base import SpeechInput, SynthesisParams
from chorus.models.piper import PiperBackend, PiperSlot, bundled_voice_path
from chorus.models.piper_graph import PiperGraph, _flow_tensors, flow_context, flow_reach_frames
from chorus.models.piper_noise import SegmentNoise
from chorus.models.piper_plan import CostModel, flow_span, flowed_after, plan_windows

# Its first sentence is long: the first segment is cut at FIRST_SEGMENT_PHONEMES and has ~200 frames.
TEXT = (
    "The quarterly report shows that our revenue grew by twelve percent, while costs stayed nearly flat across "
    "every region. Next year looks brighter still."
)
SEEDED = SynthesisParams(seed=7)


def _slot(piper: PiperBackend, params: SynthesisParams = SEEDED) -> PiperSlot:
    inp = SpeechInput("t", TEXT, piper.voice_id, params)
    (slot,) = piper.prefill([(inp, piper.preprocess(inp))])
    assert isinstance(slot, PiperSlot)
    return slot


def _speak(piper: PiperBackend, slot: PiperSlot) -> np.ndarray:
    chunks = []
    while not slot.is_finished:
        chunks.extend(o.audio for o in piper.step([slot]))
    return np.concatenate(chunks)


@pytest.fixture(scope="module")
def prior(piper: PiperBackend) -> np.ndarray:
    ids = piper.preprocess(SpeechInput("t", TEXT, piper.voice_id)).phoneme_ids[1]
    scales = np.asarray([0.667, 1.0, 0.8], dtype=np.float32)
    out, _ = piper.graph.encode(ids, scales, None, SegmentNoise(3, piper.graph.latent_channels), flow=False)
    assert out.shape[2] > 150
    return out


def test_flow_context_is_its_receptive_field(piper: PiperBackend) -> None:
    model = onnx.load(str(bundled_voice_path()))
    split = _flow_tensors(model, piper.graph.latent_name)
    assert split == piper.graph.flow_inputs
    # Four coupling layers of four kernel-5 convolutions: 4 x 4 x 2 frames on each side.
    assert piper.graph.flow_context_frames == 32


def test_flow_windows_equal_the_whole_flow(piper: PiperBackend, prior: np.ndarray) -> None:
    graph = piper.graph
    whole = graph.run_flow(prior, None)
    total = prior.shape[2]

    def window_error(lo: int, hi: int, context: int) -> float:
        a, b = max(0, lo - context), min(total, hi + context)
        part = graph.run_flow(prior[:, :, a:b], None)
        return float(np.abs(part[:, :, lo - a : hi - a] - whole[:, :, lo:hi]).max())

    cuts = [(0, 60), (60, 100), (100, total)]
    assert max(window_error(lo, hi, graph.flow_context_frames) for lo, hi in cuts) <= 1e-6
    # Less context is not enough: the context is what makes the windows exact.
    assert max(window_error(lo, hi, graph.flow_context_frames - 8) for lo, hi in cuts) > 1e-5


def test_a_requests_first_window_runs_only_the_flow_it_needs(
    piper: PiperBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = _slot(piper)
    (first,) = piper.step([slot])
    assert slot.prior is not None
    total = slot.prior.shape[2]
    needed = piper.windows.first + piper.graph.context_frames  # the first window and its right context
    assert slot.flowed == needed < total - 2 * piper.graph.flow_context_frames
    (second,) = piper.step([slot])
    assert slot.flowed == total  # the second window ran the rest of the segment
    split = np.concatenate([first.audio, second.audio, _speak(piper, slot)])

    monkeypatch.setattr(piper.graph, "flow_context_frames", 0)  # no exact windows: the flow runs whole
    whole_slot = _slot(piper)
    (first,) = piper.step([whole_slot])
    assert whole_slot.prior is not None and whole_slot.flowed == whole_slot.prior.shape[2]
    whole = np.concatenate([first.audio, _speak(piper, whole_slot)])
    assert split.size == whole.size
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-6)


def test_admission_prices_the_flow_the_steps_run(piper: PiperBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    run_flow = piper.graph.run_flow

    def counting(prior: np.ndarray, speaker_id: int | None) -> np.ndarray:
        ran.append(prior.shape[2])
        return run_flow(prior, speaker_id)

    monkeypatch.setattr(piper.graph, "run_flow", counting)
    slot = _slot(piper)
    per_step: list[int] = []  # flow frames run by each window of the first segment
    while slot.segment_index == 0:
        ran.clear()
        piper.step([slot])
        if not per_step:
            assert slot.prior is not None
            start = dataclasses.replace(piper._position(slot), flowed=0, cursor=0, num_windows=0)
        per_step.append(sum(ran))
    assert per_step[0] < per_step[1] and len(per_step) > 2  # a first window's share, the rest, then nothing
    flow_frames_only = CostModel()
    flow_frames_only.per_id = flow_frames_only.per_frame = flow_frames_only.per_converted_frame = 0.0
    flow_frames_only.per_flow_frame = 1.0
    planned = plan_windows(
        start,
        piper.windows,
        flow_frames_only,
        piper.frame_seconds,
        piper.graph.context_frames,
        flow_context=piper.graph.flow_context_frames,
    )
    assert [round(w.cost_s) for w in planned[: len(per_step)]] == per_step


def test_flow_span_by_hand() -> None:
    # A request's first window needing 60 frames of a 210-frame segment: 60 + 32 prior frames, ready up to 60.
    assert flow_span(210, 0, 60, 32, first=True) == (0, 92)
    assert flowed_after(210, 92, 32) == 60
    # Its next window runs the rest, from 32 frames before what is ready.
    assert flow_span(210, 60, 120, 32, first=False) == (28, 210)
    assert flowed_after(210, 210, 32) == 210
    # Ready already: nothing runs.
    assert flow_span(210, 210, 200, 32, first=False) == (0, 0)
    # A short segment, or less than a context left over: whole at once.
    assert flow_span(120, 0, 60, 32, first=True) == (0, 120)
    # Any other segment's first window, and a flow with no exact windows (context 0): whole.
    assert flow_span(210, 0, 60, 32, first=False) == (0, 210)
    assert flow_span(210, 0, 60, 0, first=True) == (0, 210)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "flow",
        [
            helper.make_tensor_value_info("prior", onnx.TensorProto.FLOAT, [1, 4, None]),
            helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [1, 1, None]),
        ],
        [helper.make_tensor_value_info("latent", onnx.TensorProto.FLOAT, [1, 4, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _graph_with_flow(model: onnx.ModelProto) -> PiperGraph:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    graph = PiperGraph({}, session, session, "latent", False, 4)
    graph.flow, graph.flow_inputs = session, ("prior", "mask")
    return graph


def _conv_flow(mixing: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 4, 5)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["prior", "w"], ["c1"], pads=[2, 2], kernel_shape=[5]),
        helper.make_node("Conv", ["c1", "w"], ["c2"], pads=[4, 4], kernel_shape=[5], dilations=[2]),
    ]
    if mixing:  # a mean over all frames: no window of it is exact, whatever the context
        nodes += [
            helper.make_node("ReduceMean", ["c2"], ["mean"], axes=[2], keepdims=1),
            helper.make_node("Add", ["c2", "mean"], ["c3"]),
        ]
    nodes.append(helper.make_node("Mul", ["c3" if mixing else "c2", "mask"], ["latent"]))
    return _model(nodes, [weight])


def test_reach_and_context_of_a_hand_built_flow() -> None:
    model = _conv_flow(mixing=False)
    assert flow_reach_frames(model, "prior") == 2 + 4
    assert flow_context(_graph_with_flow(model), 6) == 6


def test_a_flow_whose_windows_differ_runs_whole() -> None:
    model = _conv_flow(mixing=True)
    assert flow_reach_frames(model, "prior") == 6  # the mean over frames is not seen by the reach ...
    assert flow_context(_graph_with_flow(model), 6) == 0  # ... but the check on real runs catches it


def test_a_graph_without_the_prior_pattern_is_not_split() -> None:
    assert _flow_tensors(_conv_flow(mixing=False), "latent") is None  # no prior noise in it
