"""What a running batch job costs live traffic: live streams' first audio and underruns with and without a job.

One chorus server (bundled voice). Each repeat, interleaved, at each size N: the live workload of ``chorus bench``
(N concurrent ~10 s streams arriving over the window) on an idle server, then the same while a batch job of long
lines runs (submitted just before, cancelled after). Reported: TTFA p50/p95, underruns and 429s, side by side,
and how much job audio was made meanwhile (the job is not starved, only kept behind live requests).

``--fine-tune SHAPE``: the background is a LoRA fine-tune instead (``finetune_load``: the trainer a
``chorus worker --queue finetune`` runs, at its priority, on a random Qwen3 Base model of SHAPE), on the same
machine as the server; reported with the training steps it made meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from chorus.bench.load import cpu_model, git_commit
from chorus.bench.servers import Server, running
from chorus.bench.workloads import Measurement, measure, wait_idle, warm_up

JOB_LINE = (
    "This line belongs to a long dubbing job that runs in the background while people talk to the server live; "
    "it should move along steadily without ever making a live listener wait or hear a gap. "
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-streams", default="8,12", help="live sizes N (default 8,12)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--window-s", type=float, default=30.0, help="seconds over which live streams arrive")
    parser.add_argument("--job-items", type=int, default=60, help="lines in the background job (default 60)")
    parser.add_argument("--out", default="bench/results", help="folder for jobs.json / jobs.md / jobs.png")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: N=4, one repeat, a 6 s window")
    parser.add_argument(
        "--fine-tune",
        choices=["tiny", "0.6b", "1.7b"],
        help="the background is a LoRA fine-tune of a random Qwen3 Base model of this shape, not a batch job",
    )


def _job_audio_s(client: httpx.Client, server: Server, job_id: str) -> tuple[int, float]:
    job = client.get(f"{server.base_url}/v1/jobs/{job_id}").json()
    done = [i for i in job["items"] if i["status"] == "succeeded"]
    return len(done), sum(float(i.get("audio_s") or 0.0) for i in done)


def _with_job(server: Server, n: int, args: argparse.Namespace, repeat: int) -> tuple[Measurement, dict[str, Any]]:
    items = [{"input": JOB_LINE * 3, "voice": "alloy", "response_format": "mp3"} for _ in range(args.job_items)]
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        job = client.post(f"{server.base_url}/v1/jobs", json={"items": items}).json()
        time.sleep(1.0)  # the job's first item is under way when the first live stream arrives
        before = _job_audio_s(client, server, job["id"])
        started = time.monotonic()
        live = measure(server, "live", n, window_s=args.window_s, timeout_s=60.0, repeat=repeat)
        wall = time.monotonic() - started
        after = _job_audio_s(client, server, job["id"])
        client.post(f"{server.base_url}/v1/jobs/{job['id']}/cancel")
    job_stats = {"items_done": after[0] - before[0], "audio_s": round(after[1] - before[1], 2), "wall_s": wall}
    return live, job_stats


def _with_fine_tune(
    server: Server, n: int, args: argparse.Namespace, repeat: int, prepared: tuple[Path, Path]
) -> tuple[Measurement, dict[str, Any]]:
    from chorus.bench.finetune_load import fine_tune_running

    with fine_tune_running(*prepared) as training:
        time.sleep(15.0)  # the model is loaded and steps are running when the first live stream arrives
        before, started = training.steps, time.monotonic()
        live = measure(server, "live", n, window_s=args.window_s, timeout_s=60.0, repeat=repeat)
        wall = time.monotonic() - started
        steps = training.steps - before
    return live, {"items_done": 0, "audio_s": 0.0, "train_steps": steps, "wall_s": wall}


def _row(m: Measurement) -> dict[str, Any]:
    return {
        "requests": m.requests,
        "ok": m.ok,
        "rejected_429": m.rejected_429,
        "errors": m.errors,
        "ttfa_p50_s": m.ttfa_p50_s,
        "ttfa_p95_s": m.ttfa_p95_s,
        "underruns": m.underruns,
    }


def _stat(values: list[float | None]) -> str:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "-"
    mid = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    return f"{mid:.3f} ({vals[0]:.3f}-{vals[-1]:.3f})" if len(vals) > 1 else f"{mid:.3f}"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}, {report['cores']} cores ({report.get('cpu') or 'CPU not recorded'}), "
        f"{report['repeats']} interleaved repeats; "
        "cells: median (min-max)",
        "",
        f"| N | {'fine-tune' if report.get('fine_tune') else 'job'} | TTFA p50 s | TTFA p95 s | underruns | 429 | "
        + ("training steps made |" if report.get("fine_tune") else "job audio made s |"),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in report["sizes"]:
        runs = [r for r in report["runs"] if r["n"] == n]
        for label, key in (("none", "alone"), ("running", "with_job")):
            rows = [r[key] for r in runs]
            made = "train_steps" if report.get("fine_tune") else "audio_s"
            job = _stat([r["with_job"]["job"][made] for r in runs]) if key == "with_job" else "-"
            lines.append(
                f"| {n} | {label} | {_stat([r['ttfa_p50_s'] for r in rows])} | {_stat([r['ttfa_p95_s'] for r in rows])}"
                f" | {sum(r['underruns'] for r in rows)} | {sum(r['rejected_429'] for r in rows)} | {job} |"
            )
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    what = "fine-tune" if report.get("fine_tune") else "batch job"
    for key, label, offset in (("alone", f"no {what}", -0.15), ("with_job", f"{what} running", 0.15)):
        for i, n in enumerate(report["sizes"]):
            values = [r[key]["ttfa_p95_s"] for r in report["runs"] if r["n"] == n and r[key]["ttfa_p95_s"]]
            ax.scatter(
                [i + offset] * len(values),
                values,
                label=label if i == 0 else None,
                color="tab:blue" if key == "alone" else "tab:orange",
            )
    ax.set_xticks(range(len(report["sizes"])), [f"N={n}" for n in report["sizes"]])
    ax.set_ylabel("live TTFA p95 (s)")
    ax.set_title(f"live first audio with and without a {what}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    sizes = [4] if args.quick else [int(x) for x in args.live_streams.split(",") if x.strip()]
    repeats = 1 if args.quick else args.repeats
    if args.quick:
        args.window_s, args.job_items = 6.0, 8
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    stem = f"jobs-finetune-{args.fine_tune}" if args.fine_tune else "jobs"
    scratch = tempfile.TemporaryDirectory(prefix="chorus-bench-jobs-")
    prepared = None
    if args.fine_tune:
        from chorus.bench.finetune_load import prepare

        prepared = prepare(args.fine_tune, Path(scratch.name))
    with scratch, running("chorus", chorus_args=[], log_dir=out / "logs-jobs") as server:
        probe = warm_up(server, 60.0)
        for repeat in range(repeats):
            for n in sizes:
                alone = measure(server, "live", n, window_s=args.window_s, timeout_s=60.0, repeat=repeat)
                wait_idle(server, probe, alone)
                if prepared is not None:
                    with_job, job = _with_fine_tune(server, n, args, repeat, prepared)
                else:
                    with_job, job = _with_job(server, n, args, repeat)
                wait_idle(server, probe, with_job)
                runs.append(
                    {"n": n, "repeat": repeat, "alone": _row(alone), "with_job": {**_row(with_job), "job": job}}
                )
                print(
                    f"repeat {repeat + 1}/{repeats} N={n}: TTFA p95 {alone.ttfa_p95_s} s alone, "
                    f"{with_job.ttfa_p95_s} s with a {'fine-tune' if prepared else 'job'} ({job['audio_s']} s of job "
                    f"audio, {job.get('train_steps', 0)} training steps made); underruns "
                    f"{alone.underruns} / {with_job.underruns}",
                    flush=True,
                )
    report = {
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "repeats": repeats,
        "sizes": sizes,
        "runs": runs,
        "fine_tune": args.fine_tune,
    }
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    text = render(report)
    (out / f"{stem}.md").write_text(text + "\n")
    write_plot(report, out / f"{stem}.png")
    print(text)
    return 0
