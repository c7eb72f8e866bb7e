"""Piper's noise, drawn by chorus instead of inside the ONNX graph, so that ``seed`` makes a request reproducible.

A Piper (VITS) encoder draws two tensors of standard normal noise with ``RandomNormalLike``: the stochastic
duration predictor's (``[1, 2, num_ids]``) and the prior's (``[1, C, num_frames]``, scaled by ``noise_scale``).
ORT seeds those ops once per session, so their draws depend on every request the session ran before. Here each
op becomes a graph input, sliced inside the graph to the shape the op copied; the request's own generator fills
it. The number of frames is only known inside the graph (it comes from the predicted durations), so the prior's
input is given with room to spare (``frames_bound``) and generated block by block, each block from
(seed, segment, block): the frames a segment uses get the same values whatever the room given.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

# Graph inputs replacing the two RandomNormalLike ops, by the tensor whose shape each copied.
DURATION_NOISE = "chorus_noise_w"  # [1, 2, >= num_ids]
PRIOR_NOISE = "chorus_noise_z"  # [1, C, >= num_frames]
NOISE_BLOCK_FRAMES = 64
# First guess of a segment's frames per phoneme id (the bundled voice makes ~3); a short guess is retried larger.
FRAMES_PER_ID_GUESS = 8


def expose_noise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the encoder's RandomNormalLike ops by sliced inputs (in place; returns ``model``).

    Which op is which: the duration predictor's lives under ``/dp/`` (torch's export names); the other is the
    prior's. Raises ValueError for a graph that does not have exactly these two.
    """
    graph = model.graph
    randoms = [(i, n) for i, n in enumerate(graph.node) if n.op_type == "RandomNormalLike"]
    kinds = sorted("dp" if "/dp/" in n.name else "prior" for _, n in randoms)
    if kinds != ["dp", "prior"]:
        raise ValueError(f"expected the duration-predictor and prior RandomNormalLike ops, found {kinds}")
    for index, node in sorted(randoms, key=lambda item: -item[0]):  # from the end: indices stay valid
        name = DURATION_NOISE if "/dp/" in node.name else PRIOR_NOISE
        channels = 2 if name == DURATION_NOISE else None
        graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, channels, None]))
        length, zero, axis = f"{name}/length", f"{name}/zero", f"{name}/axis"
        replacement = [
            helper.make_node("Shape", [node.input[0]], [length], start=2, end=3, name=f"{name}/Shape"),
            helper.make_node("Constant", [], [zero], value=helper.make_tensor(zero, onnx.TensorProto.INT64, [1], [0])),
            helper.make_node("Constant", [], [axis], value=helper.make_tensor(axis, onnx.TensorProto.INT64, [1], [2])),
            helper.make_node("Slice", [name, zero, length, axis], [node.output[0]], name=f"{name}/Slice"),
        ]
        del graph.node[index]
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
    return model


class SegmentNoise:
    """The noise of one request's segments: a pure function of (seed, segment index, position)."""

    def __init__(self, seed: int, channels: int) -> None:
        self.seed = seed
        self.channels = channels

    def duration(self, segment: int, num_ids: int) -> np.ndarray:
        """[1, 2, num_ids] for the duration predictor."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, segment, 0])))
        return rng.standard_normal((1, 2, num_ids), dtype=np.float32)

    def prior(self, segment: int, frames_bound: int) -> np.ndarray:
        """[1, C, >= frames_bound] for the prior, built from whole blocks; block b's values never change."""
        blocks = -(-frames_bound // NOISE_BLOCK_FRAMES)
        parts = [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, segment, 1, b]))).standard_normal(
                (self.channels, NOISE_BLOCK_FRAMES), dtype=np.float32
            )
            for b in range(blocks)
        ]
        return np.concatenate(parts, axis=1)[None]


def random_seed() -> int:
    """A seed for a request that gave none (63 bits: fits SeedSequence and JSON integers alike)."""
    return int.from_bytes(np.random.default_rng().bytes(8), "little") >> 1
