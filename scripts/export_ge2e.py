"""Export resemblyzer's GE2E speaker encoder to ONNX: chorus/voices/data/ge2e.onnx (run once by a developer).

chorus computes speaker embeddings with onnxruntime (chorus.voices.ge2e), so a server needs neither torch nor
resemblyzer. This script needs both (`pip install torch==2.13.0` first, then `pip install '.[voices]'`):

    python scripts/export_ge2e.py

The network maps mel frames [partials, 160, 40] to L2-normalised embeddings [partials, 256]; the exported graph
is checked against torch on random input before it is written.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "chorus" / "voices" / "data" / "ge2e.onnx"
NOTICE = """chorus/voices/data/ge2e.onnx holds the weights of resemblyzer's pretrained GE2E speaker encoder
(https://github.com/resemble-ai/Resemblyzer, Copyright Resemble AI, Apache License 2.0), converted to ONNX
by scripts/export_ge2e.py without changes to the weights.
"""


def main() -> int:
    import onnxruntime as ort
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder("cpu", verbose=False).eval()
    mels = torch.rand(3, 160, 40)
    with torch.inference_mode():
        expected = encoder(mels).numpy()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        encoder,
        (mels,),
        str(OUT),
        input_names=["mels"],
        output_names=["embeddings"],
        dynamic_axes={"mels": {0: "partials", 1: "frames"}, "embeddings": {0: "partials"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    got = session.run(None, {"mels": mels.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    print(f"wrote {OUT} ({OUT.stat().st_size / 2**20:.1f} MiB); max |onnx - torch| = {diff:.2e}")
    (OUT.parent / "NOTICE").write_text(NOTICE)
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
