"""``chorus bench --cost``: what a million characters costs on each machine kind, from measured throughput.

Nothing is measured here: the figures come from a ``chorus bench`` results file (``bench/results/latest.json``
by default), which names its commit and machine, and from a price file (``prices.example.yaml``). Per system in
that file (chorus and the baselines it ran beside):

    C   = characters per audio-second  (the burst requests' texts over the audio they produced)
    T   = audio-seconds per second per device: live = streams held in real time (the capacity, median over
          repeats; each stream is 1 audio-s per s), batch = burst throughput at the largest N (median)
    H   = C x T x 3600                 characters per device-hour
    device-hours per 1M characters = 1e6 / H;  $ per 1M characters = price_per_hour x 1e6 / H

Monthly volume V characters (730 h in a month):
    burst (devices only while there is work; scale to zero):  V / 1e6 x ($ per 1M at batch T)
    always-on (enough devices for V at live T, at least one): ceil(V / (H_live x 730)) x 730 x price_per_hour
    hosted API at P $ per 1M characters:                       V / 1e6 x P
    break-even of one always-on device against the API:        V* = 730 x price_per_hour x 1e6 / P

A machine kind with ``cores`` other than the measured machine's is scaled linearly in cores and marked
``projected``: the bundled voice runs one ONNX lane per core, but only a measurement on that kind is a
measurement. Kinds whose results file does not exist are listed as not measured, with no figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from chorus.bench.corpus import text_for
from chorus.errors import ChorusError

HOURS_PER_MONTH = 730.0
VOLUMES = (1e6, 1e7, 1e8, 1e9)  # characters per month in the break-even table
FORMULA = __doc__.split("that file (chorus and the baselines it ran beside):", 1)[1].split("A machine kind", 1)[0]


CAVEATS = (
    "Read with care: the throughput is the voice the results file measured (the bundled Piper voice on CPU unless "
    "it says otherwise), which is not of a hosted API's quality: compare like with like (Qwen3-TTS on a GPU) once "
    "measured there. Always-on devices are sized for the month's average rate; size them for your peak. Burst "
    "assumes devices billed only while busy (start-up time and minimum billing not included).",
)


@dataclass(frozen=True, slots=True)
class Throughput:
    """What one system sustained on the machine a results file was measured on."""

    system: str
    chars_per_audio_s: float
    live_audio_s_per_s: float  # streams held in real time
    batch_audio_s_per_s: float  # burst throughput at the largest N
    commit: str
    cores: int


@dataclass(frozen=True, slots=True)
class Machine:
    kind: str
    usd_per_hour: float
    results: Path
    cores: int | None = None  # None = the measured machine's
    note: str = ""


def throughputs(results: dict[str, Any]) -> list[Throughput]:
    """Per system: C, live T and batch T from a ``chorus bench`` report (medians over its repeats)."""
    machine = results.get("machine", {})
    out = []
    for system, sizes in results.get("runs", {}).get("burst", {}).items():
        if not sizes:
            continue
        largest = max(sizes, key=int)
        runs = sizes[largest]
        streams = [s for run in runs for s in run["streams"] if s.get("status") == 200 and s.get("audio_s")]
        audio_s = sum(float(s["audio_s"]) for s in streams)
        if not streams or audio_s <= 0:
            continue
        chars = sum(len(text_for(int(s["index"]))) for s in streams)
        capacity = results.get("capacity", {}).get(system, {}).get("median")
        out.append(
            Throughput(
                system=system,
                chars_per_audio_s=chars / audio_s,
                live_audio_s_per_s=float(capacity or 0.0),
                batch_audio_s_per_s=statistics.median(float(r["audio_per_wall_s"]) for r in runs),
                commit=str(machine.get("commit", "unknown")),
                cores=int(machine.get("usable_cpus") or machine.get("nproc") or 1),
            )
        )
    return out


def load_prices(path: Path, default_results: Path) -> tuple[list[Machine], dict[str, float]]:
    """``machines``: kind -> $/hour, or kind -> {usd_per_hour, results?, cores?, note?}; ``apis``: name -> $/1M."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ChorusError(f"cannot read the price file {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("machines"), dict) or not data["machines"]:
        raise ChorusError(f"{path}: needs a 'machines' mapping of kind -> $/hour")
    machines = []
    for kind, spec in data["machines"].items():
        spec = {"usd_per_hour": spec} if isinstance(spec, int | float) else spec
        if not isinstance(spec, dict) or not isinstance(spec.get("usd_per_hour"), int | float):
            raise ChorusError(f"{path}: machines.{kind} needs usd_per_hour (a number)")
        if spec["usd_per_hour"] <= 0 or (spec.get("cores") is not None and int(spec["cores"]) < 1):
            raise ChorusError(f"{path}: machines.{kind}: usd_per_hour must be > 0 and cores >= 1")
        # A relative results path is read from the price file's folder (the sample sits at the repository root).
        results = path.parent / str(spec["results"]) if spec.get("results") else default_results
        cores = int(spec["cores"]) if spec.get("cores") is not None else None
        machines.append(Machine(str(kind), float(spec["usd_per_hour"]), results, cores, str(spec.get("note", ""))))
    apis = data.get("apis") or {}
    if not isinstance(apis, dict) or not all(isinstance(v, int | float) and v > 0 for v in apis.values()):
        raise ChorusError(f"{path}: 'apis' must map a name to its $ per 1M characters (a positive number)")
    return machines, {str(k): float(v) for k, v in apis.items()}


def cost_rows(machines: list[Machine], apis: dict[str, float]) -> list[dict[str, Any]]:
    """One row per machine kind and system: device-hours and $ per 1M characters, monthly costs and break-evens."""
    rows: list[dict[str, Any]] = []
    for m in machines:
        if not m.results.is_file():
            rows.append({"kind": m.kind, "usd_per_hour": m.usd_per_hour, "measured": False, "results": str(m.results)})
            continue
        for t in throughputs(json.loads(m.results.read_text())):
            scale = 1.0 if m.cores is None else m.cores / t.cores
            per_hour = {
                mode: t.chars_per_audio_s * rate * scale * 3600
                for mode, rate in (("live", t.live_audio_s_per_s), ("batch", t.batch_audio_s_per_s))
            }
            row: dict[str, Any] = {
                "kind": m.kind,
                "system": t.system,
                "usd_per_hour": m.usd_per_hour,
                "measured": True,
                "projected": scale != 1.0,
                "scale": round(scale, 3),
                "results": str(m.results),
                "commit": t.commit,
                "throughput": asdict(t),
                "chars_per_device_hour": {k: round(v) for k, v in per_hour.items()},
                "device_hours_per_1m": {k: (1e6 / v if v > 0 else None) for k, v in per_hour.items()},
                "usd_per_1m": {k: (m.usd_per_hour * 1e6 / v if v > 0 else None) for k, v in per_hour.items()},
                "note": m.note,
            }
            row["monthly"] = [monthly(v, m.usd_per_hour, per_hour, apis) for v in VOLUMES]
            row["break_even_chars_per_month"] = {
                api: break_even(m.usd_per_hour, per_hour["live"], price) for api, price in apis.items()
            }
            rows.append(row)
    return rows


def monthly(volume: float, usd_per_hour: float, per_hour: dict[str, float], apis: dict[str, float]) -> dict[str, Any]:
    live, batch = per_hour["live"], per_hour["batch"]
    devices = max(1, math.ceil(volume / (live * HOURS_PER_MONTH))) if live > 0 else None
    return {
        "chars": volume,
        "burst_usd": volume / batch * usd_per_hour if batch > 0 else None,
        "always_on_devices": devices,
        "always_on_usd": devices * HOURS_PER_MONTH * usd_per_hour if devices else None,
        "api_usd": {api: volume / 1e6 * price for api, price in apis.items()},
    }


def break_even(usd_per_hour: float, live_per_hour: float, api_usd_per_1m: float) -> float | None:
    """Monthly characters above which one always-on device beats the API; None if one device cannot carry that
    many (then the API is cheaper at every volume one device can serve, and so is scaling out)."""
    volume = HOURS_PER_MONTH * usd_per_hour * 1e6 / api_usd_per_1m
    return volume if volume <= live_per_hour * HOURS_PER_MONTH else None


def _money(v: float | None) -> str:
    return "-" if v is None else (f"${v:,.0f}" if v >= 100 else f"${v:,.2f}")


def _chars(v: float | None) -> str:
    if v is None:
        return "never (one device cannot carry it)"
    return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M"


def render(rows: list[dict[str, Any]], apis: dict[str, float]) -> str:
    out = ["### chorus bench --cost", "", "Formula:", "```", FORMULA.strip("\n"), "```", ""]
    out += ["| kind | system | $/h | chars/audio-s | live audio-s/s | batch audio-s/s | $/1M chars live | "]
    out[-1] += "$/1M chars batch | device-h/1M (batch) | from |"
    out += ["|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["measured"]:
            out.append(f"| {r['kind']} | - | {r['usd_per_hour']:.3f} | not measured: {r['results']} is missing |||||||")
            continue
        t, usd, hours = r["throughput"], r["usd_per_1m"], r["device_hours_per_1m"]
        source = f"commit {t['commit']}" + (f", projected x{r['scale']} by cores" if r["projected"] else "")
        out.append(
            f"| {r['kind']} | {r['system']} | {r['usd_per_hour']:.3f} | {t['chars_per_audio_s']:.1f} | "
            f"{t['live_audio_s_per_s'] * r['scale']:.1f} | {t['batch_audio_s_per_s'] * r['scale']:.1f} | "
            f"{_money(usd['live'])} | {_money(usd['batch'])} | {hours['batch']:.3f} | {source} |"
        )
    if apis:
        out += ["", "Hosted APIs: " + ", ".join(f"{k} ${v:g}/1M chars" for k, v in apis.items()), ""]
        out += ["**Monthly cost** (burst = devices only while there is work; always-on = devices x 730 h)", ""]
        out += ["| kind | system | chars/month | burst | always-on (devices) | " + " | ".join(apis) + " |"]
        out += ["|---|---|---|---|---|" + "---|" * len(apis)]
        for r in (r for r in rows if r["measured"] and r["system"] == "chorus"):
            for m in r["monthly"]:
                on = f"{_money(m['always_on_usd'])} ({m['always_on_devices']})"
                api_cells = " | ".join(_money(v) for v in m["api_usd"].values())
                out.append(
                    f"| {r['kind']} | {r['system']} | {_chars(m['chars'])} | {_money(m['burst_usd'])} | {on} | "
                    f"{api_cells} |"
                )
        out += ["", "**Break-even** of one always-on device against each API (chars/month):", ""]
        for r in (r for r in rows if r["measured"] and r["system"] == "chorus"):
            cells = ", ".join(f"{api} {_chars(v)}" for api, v in r["break_even_chars_per_month"].items())
            out.append(f"- {r['kind']} / {r['system']}: {cells}")
    out += ["", *CAVEATS]
    return "\n".join(out) + "\n"


def write_plot(rows: list[dict[str, Any]], apis: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = [10 ** (5 + i / 10) for i in range(51)]  # 1e5 .. 1e10 characters a month
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for api, price in apis.items():
        ax.plot(volumes, [v / 1e6 * price for v in volumes], "--", label=f"API {api} (${price:g}/1M)")
    for r in (r for r in rows if r["measured"] and r["system"] == "chorus"):
        per_hour = r["chars_per_device_hour"]
        costs = [monthly(v, r["usd_per_hour"], per_hour, {}) for v in volumes]
        ax.plot(volumes, [c["burst_usd"] for c in costs], label=f"chorus burst, {r['kind']}")
        ax.step(volumes, [c["always_on_usd"] for c in costs], where="post", label=f"chorus always-on, {r['kind']}")
    ax.set(xscale="log", yscale="log", xlabel="characters per month", ylabel="$ per month")
    ax.set_title("Monthly cost: self-hosted chorus vs hosted APIs (from measured throughput)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_cost(args: argparse.Namespace) -> int:
    if not args.prices:
        raise ChorusError("--cost needs --prices FILE (see prices.example.yaml)")
    machines, apis = load_prices(Path(args.prices), Path(args.results))
    rows = cost_rows(machines, apis)
    text = render(rows, apis)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"prices": str(args.prices), "apis": apis, "formula": FORMULA.strip("\n"), "rows": rows}
    (out / "cost.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "cost.md").write_text(text)
    write_plot(rows, apis, out / "cost.png")
    print(f"wrote {out / 'cost.json'}, {out / 'cost.md'}, {out / 'cost.png'}")
    return 0 if any(r["measured"] for r in rows) else 1
