"""The Piper decoder's 2-D layout (same output), its receptive field (the context a window needs), and the int8
decoder (close to float, deterministic, cached, selectable through the backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.utils import Extractor

from chorus.models.base import SpeechInput, SynthesisParams
from chorus.models.piper import PiperBackend, bundled_voice_path
from chorus.models.piper_graph import PiperGraph, _decoder_input
from chorus.models.piper_layout import context_frames, decoder_as_2d, receptive_field_frames
from chorus.models.piper_noise import SegmentNoise

SENTENCE = "The old lighthouse still guides the fishing boats safely back to the harbor."


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, latent: np.ndarray) -> np.ndarray:
    (audio,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(latent)})
    return np.asarray(audio, dtype=np.float32).reshape(-1)


@pytest.fixture(scope="module")
def decoder_1d() -> onnx.ModelProto:
    model = onnx.load(str(bundled_voice_path()))
    return Extractor(model).extract_model([_decoder_input(model)], [model.graph.output[0].name])


@pytest.fixture(scope="module")
def latent(piper: PiperBackend) -> np.ndarray:
    ids = piper.preprocess(SpeechInput("t", SENTENCE, piper.voice_id)).phoneme_ids[0]
    scales = np.asarray([0.0, 1.0, 0.0], dtype=np.float32)
    out, _ = piper.graph.encode(ids, scales, None, SegmentNoise(0, piper.graph.latent_channels))
    assert out.shape[2] > 100
    return out


def test_2d_decoder_gives_the_1d_output(decoder_1d: onnx.ModelProto, latent: np.ndarray) -> None:
    as_2d = decoder_as_2d(decoder_1d)
    assert as_2d is not decoder_1d
    convs = [n for n in as_2d.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(
        len(helper.get_attribute_value(a)) == 2 for n in convs for a in n.attribute if a.name == "strides"
    )
    one, two = _run(_session(decoder_1d), latent), _run(_session(as_2d), latent)
    assert one.shape == two.shape == (latent.shape[2] * 256,)
    np.testing.assert_allclose(two, one, atol=1e-5)


def test_graphs_the_rewrite_does_not_know_are_left_alone() -> None:
    # Two data inputs (like a multi-speaker decoder's latent and speaker conditioning).
    weight = numpy_helper.from_array(np.ones((1, 1, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]), helper.make_node("Add", ["c", "g"], ["y"])],
        "two-inputs",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 1, None]) for n in ("x", "g")],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, None])],
        [weight],
    )
    model = helper.make_model(graph)
    assert decoder_as_2d(model) is model


def test_receptive_field_of_a_hand_built_chain() -> None:
    # Conv k=3 d=2 (reach 2 samples at 1 sample/frame) → ConvTranspose k=16 s=8 p=4 (11 samples at 8/frame)
    # → Conv k=7 d=1 p=3 at 8 samples/frame (3/8): 2 + 11/8 + 3/8 = 3.75 frames.
    inits = [
        numpy_helper.from_array(np.ones((1, 1, 3), np.float32), "w1"),
        numpy_helper.from_array(np.ones((1, 1, 16), np.float32), "w2"),
        numpy_helper.from_array(np.ones((1, 1, 7), np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], dilations=[2], pads=[2, 2]),
        helper.make_node("ConvTranspose", ["a", "w2"], ["b"], strides=[8], pads=[4, 4]),
        helper.make_node("Conv", ["b", "w3"], ["c"], pads=[3, 3]),
        helper.make_node("LeakyRelu", ["c"], ["y"]),
    ]
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 1, None]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "chain", io[:1], io[1:], inits))
    assert receptive_field_frames(model) == pytest.approx(3.75)
    assert context_frames(3.75) == 4
    assert context_frames(None) == 16


def test_context_frames_from_the_receptive_field_decode_exactly(
    decoder_1d: onnx.ModelProto, latent: np.ndarray
) -> None:
    reach = receptive_field_frames(decoder_1d)
    assert reach == pytest.approx(11.08, abs=0.01)
    context = context_frames(reach)
    session = _session(decoder_1d)
    whole = _run(session, latent)
    start, end = 40, 90  # a window from the middle of the segment

    def window(ctx: int) -> np.ndarray:
        lo, hi = start - ctx, end + ctx
        return _run(session, latent[:, :, lo:hi])[(start - lo) * 256 : (end - lo) * 256]

    assert np.abs(window(context) - whole[start * 256 : end * 256]).max() < 1e-5
    assert np.abs(window(8) - whole[start * 256 : end * 256]).max() > 1e-4  # less context than the reach: not exact


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$XDG_CACHE_HOME/chorus of the int8 tests: quantised once, then read by the backend test."""
    return tmp_path_factory.mktemp("cache-home") / "chorus"


@pytest.mark.slow
def test_int8_decoder_is_close_to_float_deterministic_and_cached(
    piper: PiperBackend, latent: np.ndarray, int8_cache: Path, tmp_path: Path
) -> None:
    graph = PiperGraph.load(bundled_voice_path(), quantization="int8", cache_dir=int8_cache)
    (cached,) = int8_cache.glob("piper-int8-*.onnx")
    assert {n.op_type for n in onnx.load(str(cached)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    float_audio = piper.graph.decode(latent, None)
    int8_audio = graph.decode(latent, None)
    assert int8_audio.shape == float_audio.shape
    error = np.sqrt(np.mean((int8_audio - float_audio) ** 2) / np.mean(float_audio**2))
    assert 1e-3 < error < 0.3  # quantised (not the float model), and still the same speech
    # From the cache: the same model; quantised afresh elsewhere: the same bytes (calibration has no randomness).
    mtime = cached.stat().st_mtime_ns
    again = PiperGraph.load(bundled_voice_path(), quantization="int8", cache_dir=int8_cache)
    assert cached.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.decode(latent, None), int8_audio)
    PiperGraph.load(bundled_voice_path(), quantization="int8", cache_dir=tmp_path)
    (fresh,) = tmp_path.glob("piper-int8-*.onnx")
    assert fresh.name == cached.name and fresh.read_bytes() == cached.read_bytes()


@pytest.mark.slow
def test_int8_through_the_backend(piper: PiperBackend, int8_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chorus.bench.quality_piper import render

    monkeypatch.setenv("XDG_CACHE_HOME", str(int8_cache.parent))  # the backend finds the model quantised above
    backend = PiperBackend(num_workers=1, quantization="int8")
    try:
        quiet = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
        ours, reference = render(backend, SENTENCE, quiet), render(piper, SENTENCE, quiet)
    finally:
        backend.close()
    assert ours.size == reference.size  # same encoder: same durations
    assert np.abs(ours - reference).max() > 0 and np.corrcoef(ours, reference)[0, 1] > 0.9


def test_unknown_quantization_is_refused() -> None:
    with pytest.raises(ValueError, match="int4"):
        PiperGraph.load(bundled_voice_path(), quantization="int4")
