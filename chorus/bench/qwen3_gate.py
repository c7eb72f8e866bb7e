"""``chorus bench-qwen3 --gate bfloat16``: a lower-precision Qwen3-TTS through the audio-quality gate.

The gate is the Piper one (chorus.bench.quality_gate: mel-cepstral distortion, GE2E speaker similarity and the
same recogniser's word error rate, against the float32 model on held-out sentences). Its bounds are not Piper's:
an autoregressive model in another precision soon samples other codes, so its audio differs from float32's the
way another seed's does. The yardstick is therefore float32 against itself with other seeds, measured in the same
run, and the candidate passes when it is no further from float32 than that (``bounds_from``): what bf16 may lose
is what resampling already changes, and nothing more.

Both models load the same checkpoint folder on the same device; every sentence is rendered through chorus's
engine with the same seeded sampling (seed = its index; the yardstick uses seed + YARDSTICK_SEED_OFFSET). Meant
for a GPU with a real checkpoint (``--model-path``); on the tiny random model it only exercises the path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from chorus.bench.corpus import SENTENCES
from chorus.bench.quality_gate import GateBounds, GateReport, Scorer

YARDSTICK_SEED_OFFSET = 1000
GATE_SPEAKER = "ryan"  # a CustomVoice speaker; the random tiny model has it too


def bounds_from(yardstick: GateReport, sentences: int) -> GateBounds:
    """A candidate may differ from float32 by what another float32 seed differs, plus a tenth (and a little)."""
    return GateBounds(
        max_mean_mcd_db=1.1 * yardstick.mean_mcd_db + 0.1,
        max_p95_mcd_db=1.1 * yardstick.p95_mcd_db + 0.1,
        min_mean_similarity=yardstick.mean_similarity - 0.02,
        min_similarity=yardstick.min_similarity - 0.03,
        max_wer_increase=max(0.0, yardstick.wer_increase) + 0.02,
        min_sentences=sentences,
    )


def render(backend: Any, texts: Sequence[str], seeds: Sequence[int], max_frames: int) -> list[np.ndarray]:
    """Each text spoken by ``backend`` through the engine (static batches), seeded; float32 mono at 24 kHz."""
    from chorus.engine.config import EngineConfig
    from chorus.engine.engine import Engine
    from chorus.engine.request import Request, RequestOutput
    from chorus.models.base import SpeechInput, SynthesisParams

    engine = Engine(backend, EngineConfig(max_slots=backend.max_slots, queue_limit=len(texts), max_frames=max_frames))
    pieces: dict[int, list[np.ndarray]] = {i: [] for i in range(len(texts))}
    for i, (text, seed) in enumerate(zip(texts, seeds, strict=True)):

        def sink(out: RequestOutput, i: int = i) -> None:
            if out.audio.size:
                pieces[i].append(out.audio)

        inp = SpeechInput(f"gate-{i}", text, GATE_SPEAKER, SynthesisParams(language="english", seed=seed))
        engine.add_request(Request(inp, sink, prepared=backend.preprocess(inp)))
    while engine.has_work():
        engine.step()
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.float32) for p in pieces.values()]


def run_gate(args: Any, path: Path, label: str, device: str) -> int:
    import torch

    from chorus.models.qwen3.backend import SAMPLE_RATE, Qwen3Backend

    candidate_dtype = getattr(torch, args.gate)
    texts = list(SENTENCES[: args.gate_sentences])
    seeds = list(range(len(texts)))

    def load(dtype: Any) -> Any:
        return Qwen3Backend(path, device=device, dtype=dtype, max_slots=min(16, len(texts)), max_len=2048)

    started = time.perf_counter()
    reference_model = load(torch.float32)
    reference = render(reference_model, texts, seeds, args.frames)
    other_seeds = render(reference_model, texts, [s + YARDSTICK_SEED_OFFSET for s in seeds], args.frames)
    del reference_model
    candidate = render(load(candidate_dtype), texts, seeds, args.frames)
    scorer = Scorer()
    analysed = scorer.analyse(reference, SAMPLE_RATE)
    yardstick = GateReport(
        tuple(scorer.score(analysed, scorer.analyse(other_seeds, SAMPLE_RATE), texts)), GateBounds(min_sentences=1)
    )
    bounds = bounds_from(yardstick, sentences=min(50, len(texts)))
    meta = {"model": str(path), "label": label, "device": device, "candidate": args.gate, "reference": "float32"}
    report = GateReport(tuple(scorer.score(analysed, scorer.analyse(candidate, SAMPLE_RATE), texts)), bounds, meta)
    for check in report.checks():
        print(f"{'pass' if check.passed else 'FAIL'}  {check.name}: {check.value:.4f} (bound {check.bound:.4f})")
    print(f"float32 seed vs seed (the yardstick): {json.dumps(yardstick.summary())}")
    verdict = "PASSES" if report.passed else "FAILS"
    print(f"{args.gate} vs float32: {verdict} the gate ({time.perf_counter() - started:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"qwen3-gate-{label}-{device}-{args.gate}.json"
    payload = {**report.to_dict(), "yardstick": yardstick.summary(), "bounds_rule": asdict(bounds)}
    target.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {target}")
    return 0 if report.passed else 1
