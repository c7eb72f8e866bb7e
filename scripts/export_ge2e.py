"""Export resemblyzer's GE2E speaker encoder to ONNX: chorus/voices/data/ge2e.onnx (run once by a developer).

chorus computes speaker embeddings with onnxruntime (chorus.voices.ge2e), so a server needs neither torch nor
resemblyzer. This script needs both (`pip install torch==2.13.0` first, then `pip install '.[voices]'`):

    python scripts/export_ge2e.py [--out PATH]

The network maps mel frames [partials, frames, 40] (chorus feeds 160-frame partials) to L2-normalised embeddings
[partials, 256], both axes dynamic. The legacy TorchScript exporter is used: it maps nn.LSTM onto ONNX's LSTM op.
The exported graph is checked against torch on random input of a few shapes; the exit status says whether it
agreed (max |onnx - torch| < 1e-5). A NOTICE crediting the weights is written next to the model.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "chorus" / "voices" / "data" / "ge2e.onnx"
NOTICE = """chorus/voices/data/ge2e.onnx holds the weights of resemblyzer's pretrained GE2E speaker encoder
(https://github.com/resemble-ai/Resemblyzer, Copyright Resemble AI, Apache License 2.0), converted to ONNX
by scripts/export_ge2e.py without changes to the weights.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the model (default: {OUT})")
    out: Path = parser.parse_args(argv).out

    import onnxruntime as ort
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder("cpu", verbose=False).eval()
    mels = torch.rand(3, 160, 40)  # the example input that the exporter traces with
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (above), and its batch-size caveat for LSTMs does not apply:
        # the initial states are built from the input's shape (ConstantOfShape), checked below on other batches.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*with a variable length with LSTM.*")
        torch.onnx.export(
            encoder,
            (mels,),
            str(out),
            input_names=["mels"],
            output_names=["embeddings"],
            dynamic_axes={"mels": {0: "partials", 1: "frames"}, "embeddings": {0: "partials"}},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diff = 0.0
    for shape in [(3, 160, 40), (1, 160, 40), (7, 160, 40), (2, 57, 40)]:  # the dynamic axes really are
        check = torch.rand(*shape)
        with torch.inference_mode():
            expected = encoder(check).numpy()
        got = session.run(None, {"mels": check.numpy()})[0]
        diff = max(diff, float(np.abs(got - expected).max()))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB); max |onnx - torch| = {diff:.2e}")
    (out.parent / "NOTICE").write_text(NOTICE)
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
