"""``chorus bench-consent --phrase-errors N``: how often the consent recogniser mishears a clear reading.

Every target speaker of ``chorus bench-consent`` (three festival and three flite voices) reads N random
challenge phrases; each reading is checked twice, once with a grammar whose distractors may be any other word
(``distractor_apart`` 0, the first design) and once with the shipped one (``DISTRACTOR_APART``: no distractor
sounds close to the expected word). Reported per speaker and grammar: misheard readings (a false refusal:
the person said the phrase and must ask for a new challenge) and false acceptances (the reading checked
against another random phrase, which must be refused). ``DISTRACTOR_APART`` was chosen on flite readings of
other phrases (seeds 7 and 8: slt, rms, awb); the festival voices and this seed never took part in that choice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

from chorus.consent.phrases import DISTRACTOR_APART, PhraseChecker, new_phrase

from .load import git_commit
from .voice_speakers import Speaker, synthesize_target

GRAMMARS = {"any distractor": 0.0, "distractors apart (shipped)": DISTRACTOR_APART}


def run(args: argparse.Namespace, targets: tuple[Speaker, ...]) -> int:
    started = time.perf_counter()
    rng = random.Random(args.seed)
    checkers = {name: PhraseChecker(distractor_apart=apart) for name, apart in GRAMMARS.items()}
    rows: list[dict[str, Any]] = []
    for speaker in targets:
        misheard: dict[str, list[list[str]]] = {name: [] for name in GRAMMARS}
        accepted = dict.fromkeys(GRAMMARS, 0)
        for _ in range(args.phrase_errors):
            phrase, other = new_phrase(rng=rng), new_phrase(rng=rng)
            audio, rate = synthesize_target(speaker, phrase)
            for name, checker in checkers.items():
                heard = checker.check(audio, rate, phrase)
                if not heard.matches:
                    misheard[name].append([phrase, heard.heard])
                accepted[name] += checker.check(audio, rate, other).matches
        counts = {name: {"misheard": len(misheard[name]), "false_accepts": accepted[name]} for name in GRAMMARS}
        rows.append({"speaker": speaker.name, "readings": args.phrase_errors, "counts": counts, "misheard": misheard})
        print(speaker.name, json.dumps(counts), flush=True)
    result = {
        "command": f"chorus bench-consent --phrase-errors {args.phrase_errors} --seed {args.seed}",
        "commit": git_commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "grammars": GRAMMARS,
        "speakers": rows,
        "totals": {
            name: {k: sum(r["counts"][name][k] for r in rows) for k in ("misheard", "false_accepts")}
            for name in GRAMMARS
        },
        "readings": args.phrase_errors * len(targets),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "consent-phrases.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result)
    (args.out / "consent-phrases.md").write_text(markdown)
    write_plot(result, args.out / "consent-phrases.png")
    print(markdown)
    print(f"wrote {args.out / 'consent-phrases.json'}, .md, .png in {result['seconds']} s")
    return 0


def render(result: dict[str, Any]) -> str:
    names = list(result["grammars"])
    lines = [
        f"# consent recogniser: misheard readings ({result['command']})",
        "",
        "Each reading is one clear synthetic reading of a random 6-word challenge phrase, checked by each grammar;"
        " misheard = refused although it says the phrase; false accepts = the same reading checked against another"
        " random phrase and accepted.",
        "",
        "| speaker | readings | " + " | ".join(f"{n}: misheard | {n}: false accepts" for n in names) + " |",
        "|---|---|" + "---|---|" * len(names),
    ]
    for row in result["speakers"]:
        cells = [f"{row['counts'][n]['misheard']} | {row['counts'][n]['false_accepts']}" for n in names]
        lines.append(f"| {row['speaker']} | {row['readings']} | " + " | ".join(cells) + " |")
    total = [f"**{result['totals'][n]['misheard']}** | {result['totals'][n]['false_accepts']}" for n in names]
    lines.append(f"| all | {result['readings']} | " + " | ".join(total) + " |")
    lines += ["", "Misheard (said → heard):", ""]
    for row in result["speakers"]:
        for name in names:
            for said, heard in row["misheard"][name]:
                lines.append(f"- {row['speaker']}, {name}: `{said}` → `{heard or '(nothing)'}`")
    return "\n".join(lines) + "\n"


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speakers = [r["speaker"] for r in result["speakers"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(result["grammars"])
    for i, name in enumerate(result["grammars"]):
        rates = [100.0 * r["counts"][name]["misheard"] / r["readings"] for r in result["speakers"]]
        ax.bar([x + i * width for x in range(len(speakers))], rates, width, label=name)
    ax.set_xticks([x + width * (len(result["grammars"]) - 1) / 2 for x in range(len(speakers))], speakers)
    ax.set_ylabel("clear readings misheard (%)")
    ax.set_title("consent recogniser: false refusals per speaker")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
