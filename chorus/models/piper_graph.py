"""A Piper (VITS) ONNX voice split in three: an encoder, a windowed flow and a windowed decoder.

Piper's graph is text encoder → duration predictor → flow → HiFi-GAN decoder. The decoder is a stack of
convolutions over latent frames (256 samples each), so a window of frames decoded with as many frames of
context on each side as the decoder's receptive field (``context_frames``: 12 for the bundled voice, whose
field is 11.08 frames) gives the same samples as decoding the whole sentence (max difference 2e-6).
Splitting the graph turns one sentence-sized lump of work into a cheap encoder call plus decoder windows that
stream and interleave with other requests.

The flow (the prior's frames → the decoder's latent) is convolutions over frames too: four coupling layers of
four kernel-5 convolutions each, so a latent frame sees 32 prior frames on either side (``flow_context_frames``)
and a window of it computed with that much context equals the whole-segment flow exactly (max difference 0.0 on
the bundled voice). It costs ~0.16 ms of CPU per frame, half the encoder's time on a first segment: computing
only the frames a request's first window needs takes ~20 ms off its first audio (``PiperBackend``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnx.utils import Extractor
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from chorus.models.piper_layout import context_frames, decoder_as_2d, receptive_field_frames
from chorus.models.piper_noise import (
    DURATION_NOISE,
    FRAMES_PER_ID_GUESS,
    NOISE_BLOCK_FRAMES,
    PRIOR_NOISE,
    SegmentNoise,
    expose_noise,
)

log = logging.getLogger(__name__)

_DECODER_ENTRY = "dec.conv_pre.weight"
# No segment (≤ 160 phonemes, speed ≥ 0.25) comes near this many frames; past it the error is real.
MAX_NOISE_FRAMES = 1 << 20
# A run retried with more noise frames is expected, not an error worth ORT's log line.
_QUIET = ort.RunOptions()
_QUIET.log_severity_level = 4


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    # One intra-op thread per run: parallelism comes from running slots on several threads at once,
    # which beat one run with two threads on 2 cores (see the note on issue #3). Other session options
    # (optimisation levels, arena, memory pattern, denormals, spinning) measured no different (issue #9).
    # ORT's own memory arena stays on: without it glibc's per-thread heaps fragmented (+65 MB of RSS per 1,500
    # requests), and trimming them (malloc_trim) took 65-85 ms with the heap locked, long enough to make live
    # streams run dry (issue #11's note). Its memory patterns are off: ORT keeps one per input shape, and windows,
    # segments and texts vary without end (in the soak bench, with them on, one 128 MiB arena block kept filling:
    # +5.6 MiB of RSS in 6 minutes; off, it did not grow).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = False
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class PiperGraph:
    """The encoder and decoder sessions of one Piper voice, plus its config."""

    config: dict[str, Any]
    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    latent_name: str
    has_speaker_input: bool
    latent_channels: int
    # Latent frames of context a decoder window needs on each side to equal the whole-segment decode (from the
    # decoder's receptive field, piper_layout.receptive_field_frames: 12 for the bundled voice).
    context_frames: int = 16
    # The flow on its own (prior frames → latent), or None when this graph could not be split there: then the
    # encoder gives the latent itself. Windows of it need ``flow_context_frames`` prior frames on each side.
    flow: ort.InferenceSession | None = None
    flow_context_frames: int = 0
    flow_inputs: tuple[str, str] = ("", "")  # the prior and the frame mask the flow takes

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.config.get("hop_length", 256))

    @classmethod
    def load(
        cls,
        model_path: Path,
        config_path: Path | None = None,
        *,
        quantization: str = "none",
        cache_dir: Path | None = None,
    ) -> PiperGraph:
        """``quantization``: "none", or "int8" for an int8 decoder (chorus.models.piper_quant; it failed the
        quality gate on the bundled voice), quantised at load or taken from ``cache_dir`` (default
        ``$XDG_CACHE_HOME/chorus``)."""
        if quantization not in ("none", "int8"):
            raise ValueError(f"model.quantization {quantization!r}: Piper voices take none or int8")
        config_path = config_path or Path(f"{model_path}.json")
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model = onnx.load(str(model_path))
        latent = _decoder_input(model)
        durations = _duration_tensor(model)
        inputs = [i.name for i in model.graph.input]
        has_sid = "sid" in inputs
        extractor = Extractor(model)
        speaker = ["sid"] if has_sid else []
        split = _flow_tensors(model, latent)
        # The encoder's noise comes in as inputs (piper_noise): a request's seed then fixes its audio.
        encoder = expose_noise(extractor.extract_model(inputs, [split[0] if split else latent, durations]))
        decoder = extractor.extract_model([latent, *speaker], [model.graph.output[0].name])
        context = context_frames(receptive_field_frames(decoder))
        # Same arithmetic on ORT's faster 2-D convolution path (piper_layout).
        decoder = decoder_as_2d(decoder)
        channels = next(init.dims[1] for init in model.graph.initializer if init.name == _DECODER_ENTRY)
        graph = cls(config, _session(encoder), _session(decoder), latent, has_sid, int(channels), context)
        if split:
            flow = extractor.extract_model([*split, *speaker], [latent])
            graph.flow, graph.flow_inputs = _session(flow), split
            graph.flow_context_frames = flow_context(graph, flow_reach_frames(flow, split[0]))
            if not graph.flow_context_frames:  # windows of it would not be exact: the flow runs whole
                log.info("Piper flow of %s runs on whole segments (its windows did not match)", model_path)
        if quantization == "int8":
            from chorus.models.piper_quant import int8_decoder

            log.warning(
                "model.quantization int8 failed chorus's audio-quality gate on the bundled Piper voice (mean MCD "
                "3.6 dB, WER +9 points; README); check a voice with `chorus bench-quality` before serving it"
            )
            graph.decoder = _session(int8_decoder(graph, decoder, Path(model_path), cache_dir))
        return graph

    def encode(
        self,
        phoneme_ids: list[int],
        scales: np.ndarray,
        speaker_id: int | None,
        noise: SegmentNoise,
        segment: int = 0,
        *,
        flow: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Phoneme ids → (latent [1, C, T] with T = frames, frames per phoneme id [N]), with the noise of
        ``noise`` for segment ``segment`` (so the same seed and segment give the same latent).

        ``flow=False``: the first output is the flow's input instead (the prior's frames, [1, C, T]), for
        ``run_flow`` to turn into the latent, whole or in windows (with no separate flow: the latent itself)."""
        num_ids = len(phoneme_ids)
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([phoneme_ids], dtype=np.int64),
            "input_lengths": np.asarray([num_ids], dtype=np.int64),
            "scales": scales,
            DURATION_NOISE: noise.duration(segment, num_ids),
        }
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        length_scale = max(1.0, float(scales[1]))
        bound = int(FRAMES_PER_ID_GUESS * num_ids * length_scale) + NOISE_BLOCK_FRAMES
        while True:
            feeds[PRIOR_NOISE] = noise.prior(segment, bound)
            try:
                latent, durations = self.encoder.run(None, feeds, _QUIET)
                break
            except (Fail, RuntimeException, InvalidArgument):
                # The segment has more frames than the noise given: only a guess, retried with more room.
                if bound > MAX_NOISE_FRAMES:
                    raise
                bound *= 4
        frames = np.asarray(durations, dtype=np.float64).reshape(-1).astype(np.int64)
        if flow and self.flow is not None:
            latent = self.run_flow(latent, speaker_id)
        return latent, frames

    def run_flow(self, prior_window: np.ndarray, speaker_id: int | None) -> np.ndarray:
        """Prior frames [1, C, W] → latent frames [1, C, W]; exact for the frames ``flow_context_frames`` or more
        from a cut edge of the window (a segment's own ends are not cut edges)."""
        if self.flow is None:
            raise RuntimeError("this Piper graph has no separate flow (encode gives the latent)")
        prior_name, mask_name = self.flow_inputs
        feeds: dict[str, np.ndarray] = {
            prior_name: np.ascontiguousarray(prior_window),
            mask_name: np.ones((1, 1, prior_window.shape[2]), dtype=np.float32),
        }
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        (latent,) = self.flow.run(None, feeds)
        return np.asarray(latent, dtype=np.float32)

    def decode(self, latent_window: np.ndarray, speaker_id: int | None) -> np.ndarray:
        """Latent frames [1, C, W] → float32 audio [W * hop_length]."""
        feeds: dict[str, np.ndarray] = {self.latent_name: np.ascontiguousarray(latent_window)}
        if self.has_speaker_input:
            feeds["sid"] = np.asarray([speaker_id or 0], dtype=np.int64)
        (audio,) = self.decoder.run(None, feeds)
        return np.asarray(audio, dtype=np.float32).reshape(-1)


def _decoder_input(model: onnx.ModelProto) -> str:
    for node in model.graph.node:
        if node.op_type == "Conv" and _DECODER_ENTRY in node.input:
            return str(node.input[0])
    raise ValueError("not a Piper/VITS voice: no HiFi-GAN decoder entry (dec.conv_pre) in the graph")


def _duration_tensor(model: onnx.ModelProto) -> str:
    # Piper's per-phoneme frame counts come out of the graph's single Ceil (see piper.patch_voice_with_alignment).
    outputs = [out for node in model.graph.node if node.op_type == "Ceil" for out in node.output]
    if len(outputs) != 1:
        raise ValueError(f"expected one Ceil (phoneme durations) in the Piper graph, found {len(outputs)}")
    return str(outputs[0])


def _flow_tensors(model: onnx.ModelProto, latent: str) -> tuple[str, str] | None:
    """(the flow's input: the prior's frames, the frame mask) of a Piper graph, or None for a graph not shaped so.

    The prior's frames are m_p + noise x exp(logs_p) x noise_scale: the first Add downstream of the prior's
    RandomNormalLike through Muls. The latent is flow(prior) x mask: the mask is the input of that last Mul that
    does not depend on the prior.
    """
    nodes = list(model.graph.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    randoms = [n for n in nodes if n.op_type == "RandomNormalLike" and "/dp/" not in n.name]
    if len(randoms) != 1:
        return None
    tensor, prior = randoms[0].output[0], None
    while prior is None:
        following = consumers.get(tensor, [])
        if len(following) != 1 or following[0].op_type not in ("Mul", "Add"):
            return None
        tensor = following[0].output[0]
        prior = tensor if following[0].op_type == "Add" else None
    downstream, frontier = {prior}, [prior]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            for out in node.output:
                if out not in downstream:
                    downstream.add(out)
                    frontier.append(out)
    last = next((n for n in nodes if latent in n.output), None)
    if last is None or last.op_type != "Mul" or len(last.input) != 2:
        return None
    masks = [name for name in last.input if name not in downstream]
    return (prior, masks[0]) if len(masks) == 1 else None


def flow_reach_frames(flow: onnx.ModelProto, prior: str) -> int:
    """Prior frames on either side a latent frame of ``flow`` can see: the largest sum along any path of each
    convolution's one-sided reach. (Every other op is taken to keep frames where they are; ``flow_context``
    checks that on the real graph.)"""
    reach: dict[str, int] = {prior: 0}
    for node in flow.graph.node:
        known = [reach[name] for name in node.input if name in reach]
        if not known:
            continue
        here = max(known)
        if node.op_type == "Conv":
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            kernel = int(attributes.get("kernel_shape", [1])[-1])
            dilation = int(attributes.get("dilations", [1])[-1])
            begin = int(attributes.get("pads", [0, 0])[0])
            span = (kernel - 1) * dilation
            here += max(begin, span - begin)
        for name in node.output:
            reach[name] = here
    return max(reach.get(out.name, 0) for out in flow.graph.output)


def flow_context(graph: PiperGraph, reach: int, seed: int = 0) -> int:
    """``reach`` if windows of ``graph``'s flow with that many prior frames of context on each side equal the whole
    run on random frames (max difference ≤ 1e-5), else 0: the flow then only runs on whole segments."""
    frames = 4 * reach + 64
    prior = np.random.default_rng(seed).standard_normal((1, graph.latent_channels, frames), dtype=np.float32)
    whole = graph.run_flow(prior, None)
    middle = (frames // 2 - 16, frames // 2 + 16)
    for lo, hi in ((0, reach + 8), middle, (frames - reach - 8, frames)):
        a, b = max(0, lo - reach), min(frames, hi + reach)
        window = graph.run_flow(prior[:, :, a:b], None)
        if not np.allclose(window[:, :, lo - a : hi - a], whole[:, :, lo:hi], rtol=0, atol=1e-5):
            return 0
    return reach
