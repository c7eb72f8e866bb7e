"""A newcomer's first window while playing streams keep every core busy: wall time against its own CPU time, with
the playing streams' threads at normal priority and at ``worker.playing_nice`` (chorus.engine.pipeline).

The bundled Piper voice, in one process and no server: one thread per core advances playing streams window after
window (long texts, restarted when done), at nice +0 or +K (``chorus.engine.pipeline.lower_priority``, the function
the engine's lanes use); this thread, at normal priority, runs a newcomer's first window every ``--gap-s`` seconds
and times it. Blocks of each setting alternate (0, K, 0, K, ...), fresh threads per block. A first window alone on a
core takes its CPU time in wall time; time-shared with a playing thread at equal priority, longer.

    python bench/first_window_nice.py --nice 10 --blocks 6 --out bench/results/first-window-nice
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

from chorus.bench.load import run_record, write_result
from chorus.bench.workloads import percentile
from chorus.engine.pipeline import lower_priority
from chorus.models.base import SpeechInput, usable_cores
from chorus.models.piper import PiperBackend

PLAYING_TEXT = (
    "The station was crowded with travellers waiting for the evening train to the coast. A small dog sat patiently "
    "beside a suitcase, watching the pigeons by the ticket office. Somewhere a radio played an old song that "
    "everybody seemed to know, and the porter whistled along while he stacked the bags."
)
NEWCOMER_TEXT = "Hello, and welcome to the show tonight. We have a lot to talk about."


def playing(backend: PiperBackend, nice: int, stop: threading.Event, name: str) -> None:
    """Advance playing streams window after window until ``stop``, at ``nice`` more than normal."""
    lower_priority(nice)
    for n in range(1_000_000):
        inp = SpeechInput(f"{name}-{n}", PLAYING_TEXT, backend.voice_id)
        [slot] = backend.prefill([(inp, backend.preprocess(inp))])
        while not slot.is_finished:
            if stop.is_set():
                return
            backend.step([slot])  # one slot, as the engine's lanes step it


def block(backend: PiperBackend, nice: int, windows: int, gap_s: float, tag: str) -> list[dict[str, float]]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=playing, args=(backend, nice, stop, f"{tag}-p{i}"), daemon=True)
        for i in range(backend.num_workers)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every playing thread past its own first window
    out = []
    for i in range(windows):
        inp = SpeechInput(f"{tag}-n{i}", NEWCOMER_TEXT, backend.voice_id)
        [slot] = backend.prefill([(inp, backend.preprocess(inp))])
        w0, c0 = time.perf_counter(), time.thread_time()
        backend.step([slot])
        out.append({"wall_s": time.perf_counter() - w0, "cpu_s": time.thread_time() - c0})
        time.sleep(gap_s)
    stop.set()
    for t in threads:
        t.join()
    return out


def summary(samples: list[dict[str, float]]) -> dict[str, float]:
    """Medians, the nearest-rank p90 and the maximum of the first windows' wall times; the median CPU time and
    the median of each window's own wall / CPU."""
    wall = [s["wall_s"] for s in samples]
    return {
        "n": len(samples),
        "wall_p50_s": statistics.median(wall),
        "wall_p90_s": percentile(wall, 90) or 0.0,
        "wall_max_s": max(wall),
        "cpu_p50_s": statistics.median(s["cpu_s"] for s in samples),
        "wall_over_cpu_p50": statistics.median(s["wall_s"] / s["cpu_s"] for s in samples),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nice", type=int, default=10, help="the playing threads' nice in the other blocks (10)")
    ap.add_argument("--blocks", type=int, default=6, help="blocks in all, alternating 0 and --nice (6)")
    ap.add_argument("--windows", type=int, default=10, help="first windows timed per block (10)")
    ap.add_argument("--gap-s", type=float, default=0.3, help="pause between first windows (0.3)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/first-window-nice"))
    args = ap.parse_args()
    backend = PiperBackend(num_workers=usable_cores())
    settings = [0, args.nice]
    samples: dict[int, list[dict[str, float]]] = {k: [] for k in settings}
    blocks = []
    for b in range(args.blocks):
        nice = settings[b % 2]
        got = block(backend, nice, args.windows, args.gap_s, f"b{b}")
        samples[nice].extend(got)
        blocks.append({"block": b, "nice": nice, **summary(got)})
        last = blocks[-1]
        print(f"block {b}: nice +{nice}: wall p50 {last['wall_p50_s']:.3f} s, cpu p50 {last['cpu_p50_s']:.3f} s")
    table = {k: summary(v) for k, v in samples.items()}
    result = run_record(
        args,
        by_nice={str(k): v for k, v in table.items()},
        blocks=blocks,
        samples={str(k): v for k, v in samples.items()},
    )
    commit = result["commit"]
    lines = [
        f"### A first window beside {usable_cores()} busy playing threads (`{commit}`, {result['date']})",
        "",
        "| playing threads | first windows | wall p50 s | wall p90 s | wall max s | CPU p50 s | wall / CPU p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, t in table.items():
        lines.append(
            f"| nice +{k} | {t['n']} | {t['wall_p50_s']:.3f} | {t['wall_p90_s']:.3f} | {t['wall_max_s']:.3f} "
            f"| {t['cpu_p50_s']:.3f} | {t['wall_over_cpu_p50']:.2f} |"
        )
    write_result(args.out, result, lines)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = [[s["wall_s"] for s in samples[k]] for k in settings]
    ax.boxplot(data)
    ax.set_xticks([1, 2], [f"playing at nice +{k}" for k in settings])
    ax.axhline(table[0]["cpu_p50_s"], ls="--", c="grey", label="first window's CPU (p50)")
    ax.set_ylabel("first window wall time, s")
    ax.set_title(f"A newcomer's first window beside busy playing threads ({commit})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    os._exit(0)  # ONNX Runtime's threads may still be torn down; the results are written


if __name__ == "__main__":
    main()
