"""Where the bundled Piper voice's CPU goes, with no server: core-seconds per audio-second of the backend's own
``step`` loop, split into the HiFi-GAN decoder, the encoder (text encoder and durations), the flow and the rest
(phonemisation, noise, Python), and the frames the decoder's window context adds.

Each of ``--threads`` threads (one ``PiperBackend``, one ONNX thread per call, as the engine's lanes run it) speaks
``--texts`` ten-second corpus texts (``chorus.bench.corpus.text_for``) one after another, window by window, and
times its own CPU (``time.thread_time``) in each part. Thread counts are interleaved over ``--repeats``; the table
gives median (min-max) over repeats. Two threads on two cores costing what one does means the cores do not slow
each other; the inverse of the cost is the most audio a core can make before any serving.

    python bench/model_split.py --threads 1,2 --repeats 3 --out bench/results/model-split
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chorus.bench.corpus import text_for
from chorus.bench.load import run_record, write_result
from chorus.bench.report import fmt_stat, stat
from chorus.models.base import SpeechInput, usable_cores
from chorus.models.piper import PiperBackend

PARTS = ("decode", "encode", "run_flow")


def split(
    cpu_s: float, audio_s: float, parts: dict[str, float], decoded_frames: int, output_frames: int
) -> dict[str, float]:
    """One thread's totals → core-s per audio-s, each part's share of its CPU ("other": what no part took) and the
    decoder's extra frames (context) per output frame."""
    shares = {f"{name}_share": parts.get(name, 0.0) / cpu_s for name in PARTS}
    return {
        "core_s_per_audio_s": cpu_s / audio_s,
        **shares,
        "other_share": 1.0 - sum(shares.values()),
        "decoder_context_overhead": decoded_frames / output_frames - 1.0,
    }


class Timed:
    """Wraps the graph's parts; adds each call's CPU time to the calling thread's own totals."""

    def __init__(self, backend: PiperBackend) -> None:
        self.local = threading.local()
        graph = backend.graph
        for name in PARTS:
            if name == "run_flow" and graph.flow is None:
                continue
            setattr(graph, name, self._wrap(name, getattr(graph, name)))

    def reset(self) -> None:
        self.local.parts = dict.fromkeys(PARTS, 0.0)
        self.local.decoded = 0
        self.local.inner = 0.0

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            outer_inner, self.local.inner = self.local.inner, 0.0
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                self.local.parts[name] += spent - self.local.inner  # exclusive: a part called inside another
                self.local.inner = outer_inner + spent
                if name == "decode":
                    self.local.decoded += int(args[0].shape[2])

        return timed


def speak(backend: PiperBackend, timed: Timed, texts: int, tag: str, out: list[dict[str, float]]) -> None:
    timed.reset()
    samples = 0
    start = time.thread_time()
    for i in range(texts):
        inp = SpeechInput(f"{tag}-{i}", text_for(i), backend.voice_id)
        [slot] = backend.prefill([(inp, backend.preprocess(inp))])
        while not slot.is_finished:
            samples += sum(len(o.audio) for o in backend.step([slot]))
    cpu = time.thread_time() - start
    out.append(
        split(cpu, samples / backend.sample_rate, timed.local.parts, timed.local.decoded, samples // backend.hop)
    )


def run(backend: PiperBackend, timed: Timed, threads: int, texts: int, tag: str) -> dict[str, float]:
    out: list[dict[str, float]] = []
    workers = [threading.Thread(target=speak, args=(backend, timed, texts, f"{tag}-t{k}", out)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {key: statistics.mean(o[key] for o in out) for key in out[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (1,2)")
    ap.add_argument("--texts", type=int, default=12, help="ten-second texts per thread (12)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/model-split"))
    args = ap.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    backend = PiperBackend(num_workers=1)
    timed = Timed(backend)
    runs: dict[int, list[dict[str, float]]] = {k: [] for k in counts}
    for r in range(args.repeats):
        for k in counts:
            got = run(backend, timed, k, args.texts, f"r{r}-k{k}")
            runs[k].append(got)
            print(
                f"repeat {r + 1}: {k} thread(s): {got['core_s_per_audio_s']:.4f} core-s per audio-s, decoder "
                f"{got['decode_share']:.0%}, context +{got['decoder_context_overhead']:.1%}"
            )
    table = {k: {key: stat([row[key] for row in rows]) for key in rows[0]} for k, rows in runs.items()}
    result = run_record(
        args,
        by_threads={str(k): {key: s.to_json() for key, s in t.items()} for k, t in table.items()},
        runs={str(k): v for k, v in runs.items()},
    )
    commit = result["commit"]

    lines = [
        f"### The Piper voice's CPU, no server (`{commit}`, {result['date']}, {usable_cores()} cores; "
        f"median (min-max) of {args.repeats} interleaved repeats)",
        "",
        "| threads | core-s per audio-s | decoder | encoder | flow | other | decoder context frames |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, t in table.items():
        lines.append(
            f"| {k} | {fmt_stat(t['core_s_per_audio_s'], '.4f')} | {fmt_stat(t['decode_share'], '.1%')} "
            f"| {fmt_stat(t['encode_share'], '.1%')} | {fmt_stat(t['run_flow_share'], '.1%')} "
            f"| {fmt_stat(t['other_share'], '.1%')} | +{fmt_stat(t['decoder_context_overhead'], '.1%')} |"
        )
    write_result(args.out, result, lines)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(counts)
    for key, label in [("decode", "decoder"), ("encode", "encoder"), ("run_flow", "flow"), ("other", "other")]:
        heights = [
            (table[k][f"{key}_share"].median or 0.0) * (table[k]["core_s_per_audio_s"].median or 0.0) for k in counts
        ]
        ax.bar([str(k) for k in counts], heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("threads at once")
    ax.set_ylabel("core-s per audio-s (median)")
    ax.set_title(f"Piper's CPU by part, no server ({commit})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    os._exit(0)  # ONNX Runtime's threads may still be torn down; the results are written


if __name__ == "__main__":
    main()
