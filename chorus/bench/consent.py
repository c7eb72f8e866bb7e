"""``chorus bench-consent``: how often spoken consent lets the right speaker in and keeps everyone else out.

Every recording goes through the server's own checks (``chorus.consent``): the recording is cleaned as an
upload is (``RECORDING_LIMITS``), the phrase is checked with the same grammar, and the speaker embedding of the
recording is compared with the embedding of the reference clip being cloned (the reference cleaned as a voice
upload is). The attempts, for every target speaker S and every challenge phrase P:

* **genuine** — S says P (also after an MP3 64 kb/s round trip with noise at 30 dB SNR: another microphone and
  channel than the reference's): must be accepted;
* **wrong phrase** — S says another phrase; **replay** — S's recording of the previous challenge;
* **other speaker** — each other voice says P (other people, espeak-ng variants, English read by festival's
  Finnish, Czech, Catalan and Italian voices);
* **bundled voice** — chorus's own Piper voice says P; **clone** — a chorus clone of S (Piper converted to S from
  S's reference clip, as ``POST /v1/audio/voices`` builds it) says P, without chorus's watermark (a clone made
  outside a chorus server); **clone, marked** — the same clone as a chorus server delivers it (watermarked,
  then MP3 64 kb/s), which the consent check refuses as synthetic whatever it sounds like;
* **expired / used challenge** — through the real service on a SQLite store.

Target speakers are the English voices among the benchmark's synthesisers; the speaker-similarity threshold
is chosen on the **dev** speakers and reported on the **test** speakers (``DEV_TARGETS`` / ``TEST_TARGETS``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus.audio.decode import decode_audio
from chorus.audio.encode import make_encoder
from chorus.consent.phrases import PhraseChecker, new_phrase
from chorus.consent.service import RECORDING_LIMITS, ConsentRefusedError, ConsentService
from chorus.voices.embedding import SpeakerEncoder
from chorus.voices.preprocess import InvalidReferenceError, ReferenceLimits, preprocess_reference, wav_bytes
from chorus.watermark import Watermarker
from chorus.watermark.marking import Marking, tenant_payload

from .voice_speakers import DEV, INSTALL_HINT, TEST, Speaker, SpeakerSet, synthesize_target

# (speaker, the set whose reference text is registered). slt appears in both: festival's HTS voice (dev) and
# flite's clustergen voice (test) are one person, made by two synthesisers; they never attack each other.
DEV_TARGETS = (
    Speaker("kal (festival)", "festival", "kal_diphone", "M", "diphone"),
    Speaker("slt (festival HTS)", "festival", "cmu_us_slt_arctic_hts", "F", "HTS"),
    Speaker("rms (flite)", "flite", "rms", "M", "clustergen"),
)
TEST_TARGETS = (
    Speaker("ked (festival)", "festival", "ked_diphone", "M", "diphone"),
    Speaker("awb (flite)", "flite", "awb", "M", "clustergen"),
    Speaker("slt (flite)", "flite", "slt", "F", "clustergen"),
)
SAME_PERSON = {"slt (festival HTS)": "slt", "slt (flite)": "slt"}
# Voices that only ever attack: not English speakers, or one formant synthesiser in several settings.
OTHER_VOICES = tuple(
    s for s in (*DEV.speakers, *TEST.speakers) if s.name not in {t.name for t in (*DEV_TARGETS, *TEST_TARGETS)}
)
THRESHOLDS = tuple(round(0.60 + 0.025 * i, 3) for i in range(15))  # 0.600 … 0.950
CHANNEL_SNR_DB = 30.0
CASES = (
    "genuine",
    "genuine_channel",
    "wrong_phrase",
    "replay",
    "other_speaker",
    "bundled_voice",
    "clone",
    "clone_marked",
)
BENCH_KEY = b"chorus bench-consent key"


@dataclass
class Recording:
    phrase_ok: bool
    embedding: np.ndarray | None  # None: refused before the speaker could be measured (not speech enough)
    heard: str = ""
    synthetic: bool = False  # carries chorus's watermark: refused whoever it sounds like


@dataclass
class Trials:
    """Per case: (phrase heard, similarity to the target) of every attempt."""

    attempts: dict[str, list[tuple[bool, float]]] = field(default_factory=lambda: {c: [] for c in CASES})

    def add(self, case: str, rec: Recording, target: np.ndarray) -> None:
        sim = SpeakerEncoder.similarity(rec.embedding, target) if rec.embedding is not None else -1.0
        self.attempts[case].append((rec.phrase_ok and not rec.synthetic, sim))

    def accepted(self, case: str, threshold: float) -> float:
        rows = self.attempts[case]
        return sum(ok and sim >= threshold for ok, sim in rows) / len(rows) if rows else float("nan")


def channel(audio: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Another microphone and channel: noise at ``CHANNEL_SNR_DB``, then an MP3 64 kb/s round trip."""
    power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-12
    noisy = audio + rng.standard_normal(audio.size) * np.sqrt(power / 10 ** (CHANNEL_SNR_DB / 10))
    return mp3(noisy.astype(np.float32), rate)


def mp3(audio: np.ndarray, rate: int) -> np.ndarray:
    """An MP3 64 kb/s round trip."""
    encoder = make_encoder("mp3", rate, bit_rate=64_000)
    data = encoder.encode(audio) + encoder.finish()
    decoded, _ = decode_audio(data, sample_rate=rate)
    return decoded


class Judge:
    """The server's checks on one recording, for a phrase: cleaned as an upload, heard, embedded."""

    def __init__(self, encoder: SpeakerEncoder, checker: PhraseChecker, marking: Marking) -> None:
        self.encoder = encoder
        self.checker = checker
        self.marking = marking

    def recording(self, audio: np.ndarray, rate: int, phrase: str) -> Recording:
        try:
            clip = preprocess_reference(wav_bytes(audio, rate), limits=RECORDING_LIMITS)
        except InvalidReferenceError:
            return Recording(False, None)
        check = self.checker.check(clip.audio, clip.sample_rate, phrase)
        synthetic = self.marking.is_marked(clip.audio, clip.sample_rate)
        try:
            embedding = self.encoder.embed(clip.audio, clip.sample_rate)
        except ValueError:
            return Recording(check.matches, None, check.heard, synthetic)
        return Recording(check.matches, embedding, check.heard, synthetic)

    def reference(self, audio: np.ndarray, rate: int) -> np.ndarray:
        clip = preprocess_reference(wav_bytes(audio, rate), limits=ReferenceLimits())
        return self.encoder.embed(clip.audio, clip.sample_rate)


def run_targets(
    targets: Sequence[Speaker],
    speaker_set: SpeakerSet,
    *,
    phrases: list[str],
    said: dict[str, list[tuple[np.ndarray, int]]],
    heard: dict[str, list[Recording]],
    bundled: list[Recording],
    judge: Judge,
    piper: Callable[[str], np.ndarray],
    piper_rate: int,
    rng: np.random.Generator,
) -> tuple[Trials, list[dict[str, object]]]:
    from chorus.models.cloning.conversion import ConversionModel

    trials = Trials()
    misses: list[dict[str, object]] = []
    for target in targets:
        reference, ref_rate = synthesize_target(target, speaker_set.reference_text)
        target_embedding = judge.reference(reference, ref_rate)
        clone = ConversionModel.fit(
            reference, ref_rate, piper(speaker_set.reference_text), piper_rate, sample_rate=piper_rate
        )
        own = said[target.name]
        for i, phrase in enumerate(phrases):
            audio, rate = own[i]
            genuine = heard[target.name][i]
            trials.add("genuine", genuine, target_embedding)
            if not genuine.phrase_ok:
                misses.append({"speaker": target.name, "phrase": phrase, "heard": genuine.heard})
            trials.add("genuine_channel", judge.recording(channel(audio, rate, rng), rate, phrase), target_embedding)
            wrong, _ = own[(i + 1) % len(phrases)]
            trials.add("wrong_phrase", judge.recording(wrong, rate, phrase), target_embedding)
            if i > 0:  # the previous challenge's recording, replayed
                trials.add("replay", judge.recording(own[i - 1][0], rate, phrase), target_embedding)
            for name, recordings in heard.items():
                if SAME_PERSON.get(name, name) != SAME_PERSON.get(target.name, target.name):
                    trials.add("other_speaker", recordings[i], target_embedding)
            trials.add("bundled_voice", bundled[i], target_embedding)
            converted = clone.stream()
            cloned = np.concatenate([converted.process(piper(phrase)), converted.flush()])
            trials.add("clone", judge.recording(cloned, piper_rate, phrase), target_embedding)
            # The same clone as a chorus server delivers it: marked (a tenant's payload), then MP3 64 kb/s.
            served = Watermarker(BENCH_KEY, piper_rate).mark(cloned, tenant_payload("attacker"))
            trials.add("clone_marked", judge.recording(mp3(served, piper_rate), piper_rate, phrase), target_embedding)
    return trials, misses


def challenge_rules(
    encoder: SpeakerEncoder, checker: PhraseChecker, recording: bytes, phrase: str, n: int
) -> dict[str, int]:
    """Expired and used challenges through the real service and store (SQLite): refused every time?"""
    from chorus.consent.service import ConsentPolicy
    from chorus.store.consents import ConsentStore
    from chorus.store.settings import StoreConfig, open_store

    refused = {"expired": 0, "used": 0, "fresh_accepted": 0}
    with tempfile.TemporaryDirectory() as tmp:
        sql, blobs = open_store(StoreConfig(), Path(tmp))
        store = ConsentStore(sql, blobs)
        service = ConsentService(store, encoder=encoder, checker=checker, policy=ConsentPolicy(challenge_ttl_s=0.2))
        for _ in range(n):
            challenge = store.issue("default", phrase, 60.0)
            service.record("default", name="bench", language="en", challenge_id=challenge.id, recording=recording)
            refused["fresh_accepted"] += 1
            try:
                service.record("default", name="bench", language="en", challenge_id=challenge.id, recording=recording)
            except ConsentRefusedError as e:
                refused["used"] += e.code == "challenge_used"
            expiring = store.issue("default", phrase, 0.05)
            time.sleep(0.1)
            try:
                service.record("default", name="bench", language="en", challenge_id=expiring.id, recording=recording)
            except ConsentRefusedError as e:
                refused["expired"] += e.code == "challenge_expired"
        sql.close()
    return {"trials": n, **refused}


# The threshold separates speakers: it is chosen on genuine attempts (both channels) against other people and the
# bundled voice. Clones are not in the choice: a clone can come as close to its target as the conversion allows,
# so no threshold that lets the genuine speaker in keeps every clone out; chorus's own clones carry its
# watermark and are refused as synthetic, and the table shows what a speaker threshold alone does to the rest.
CHOICE_CASES = ("genuine", "genuine_channel", "other_speaker", "bundled_voice")


def choose_threshold(trials: Trials) -> float:
    """The threshold that maximises the worst of: genuine accepted (each channel), other speakers and the bundled
    voice refused. Where several tie (the worst case is often a miss no threshold changes, such as a phrase not
    heard), the middle of the tied range (the lower of two middles): the widest margin on both sides."""

    def worst(t: float) -> float:
        rates = [trials.accepted(c, t) if c.startswith("genuine") else 1 - trials.accepted(c, t) for c in CHOICE_CASES]
        return round(min(r for r in rates if not np.isnan(r)), 6)

    best = max(worst(t) for t in THRESHOLDS)
    tied = [t for t in THRESHOLDS if worst(t) == best]
    return tied[(len(tied) - 1) // 2]


def table(trials: Trials) -> list[dict[str, float]]:
    rows = []
    for t in THRESHOLDS:
        row: dict[str, float] = {"threshold": t}
        for case in CASES:
            rate = trials.accepted(case, t)
            row[case] = round(rate if case.startswith("genuine") else 1 - rate, 4)
        rows.append(row)
    return rows


def similarity_summary(trials: Trials) -> dict[str, dict[str, float]]:
    out = {}
    for case, rows in trials.attempts.items():
        sims = [s for _, s in rows if s >= 0]
        if sims:
            out[case] = {
                "n": len(rows),
                "phrase_heard": round(sum(ok for ok, _ in rows) / len(rows), 4),
                "sim_min": round(min(sims), 3),
                "sim_median": round(statistics.median(sims), 3),
                "sim_max": round(max(sims), 3),
            }
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"# chorus bench-consent ({result['command']})", ""]
    lines.append(
        f"Threshold chosen on dev: **{result['threshold']}** (speaker similarity, GE2E cosine). "
        "Cells: genuine = accepted, every other case = refused."
    )
    for name in ("dev", "test"):
        rows = result["sets"][name]["table"]
        lines += ["", f"## {name} targets: {', '.join(result['sets'][name]['targets'])}", ""]
        lines.append("| threshold | " + " | ".join(CASES) + " |")
        lines.append("|---" * (len(CASES) + 1) + "|")
        for row in rows:
            mark = " ◀" if row["threshold"] == result["threshold"] else ""
            cells = " | ".join(f"{100 * row[c]:.1f} %" for c in CASES)
            lines.append(f"| {row['threshold']:.3f}{mark} | {cells} |")
        lines += ["", "| case | attempts | phrase heard | similarity min / median / max |", "|---|---|---|---|"]
        for case, s in result["sets"][name]["similarity"].items():
            lines.append(
                f"| {case} | {s['n']} | {100 * s['phrase_heard']:.1f} % | "
                f"{s['sim_min']:.3f} / {s['sim_median']:.3f} / {s['sim_max']:.3f} |"
            )
    rules = result["challenge_rules"]
    lines += [
        "",
        f"Challenge rules (real service, SQLite): fresh accepted {rules['fresh_accepted']}/{rules['trials']}, "
        f"used refused {rules['used']}/{rules['trials']}, expired refused {rules['expired']}/{rules['trials']}.",
    ]
    return "\n".join(lines) + "\n"


def write_plot(result: dict[str, Any], trials: dict[str, Trials], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, (name, tr) in zip(axes, trials.items(), strict=True):
        for case in ("genuine", "genuine_channel", "other_speaker", "bundled_voice", "clone"):
            sims = [s for _, s in tr.attempts[case] if s >= 0]
            ax.hist(sims, bins=40, range=(0.3, 1.0), alpha=0.5, label=case)
        ax.axvline(result["threshold"], color="k", linestyle="--", label="threshold")
        ax.set_title(f"{name}: speaker similarity to the reference clip")
        ax.set_xlabel("GE2E cosine similarity")
    axes[0].set_ylabel("attempts")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phrases", type=int, default=10, help="challenge phrases per target speaker (default 10)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the phrases and the channel noise")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for consent.{json,md,png}")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 2 phrases, one target per set, two other voices"
    )
    parser.add_argument(
        "--phrase-errors",
        type=int,
        default=0,
        metavar="N",
        help="instead: N readings per target of random phrases, misheard and falsely accepted, by the grammar with"
        " any distractor and the shipped one (consent-phrases.{json,md,png})",
    )


def run(args: argparse.Namespace) -> int:
    from chorus.models.piper import PiperBackend

    if args.phrase_errors > 0:
        from .consent_phrases import run as phrase_errors

        return phrase_errors(args, (*DEV_TARGETS, *TEST_TARGETS))
    started = time.perf_counter()
    word_rng = random.Random(args.seed)
    rng = np.random.default_rng(args.seed)
    num_phrases = 2 if args.quick else args.phrases
    phrases = [new_phrase(rng=word_rng) for _ in range(num_phrases)]
    dev_targets, test_targets = (DEV_TARGETS[:1], TEST_TARGETS[:1]) if args.quick else (DEV_TARGETS, TEST_TARGETS)
    other_voices = OTHER_VOICES[:2] if args.quick else OTHER_VOICES
    encoder, checker = SpeakerEncoder(), PhraseChecker()
    judge = Judge(encoder, checker, Marking(BENCH_KEY))
    try:
        backend = PiperBackend(num_workers=1)
    except Exception as e:
        print(f"cannot load the Piper voice: {e}", file=sys.stderr)
        return 1
    try:
        piper_rate = backend.sample_rate
        bundled = [judge.recording(backend.render(p), piper_rate, p) for p in phrases]
        try:
            voices = (*other_voices, *dev_targets, *test_targets)
            said = {s.name: [synthesize_target(s, p) for p in phrases] for s in voices}
        except (RuntimeError, FileNotFoundError) as e:
            print(f"{e} ({INSTALL_HINT})", file=sys.stderr)
            return 1
        # Every voice saying every phrase, judged once: the genuine attempts of the targets and the attempts of
        # everyone else on each target alike.
        heard = {
            name: [judge.recording(audio, rate, p) for (audio, rate), p in zip(clips, phrases, strict=True)]
            for name, clips in said.items()
        }
        trials: dict[str, Trials] = {}
        misses: list[dict[str, object]] = []
        for name, targets, speaker_set in (("dev", dev_targets, DEV), ("test", test_targets, TEST)):
            trials[name], missed = run_targets(
                targets,
                speaker_set,
                phrases=phrases,
                said=said,
                heard=heard,
                bundled=bundled,
                judge=judge,
                piper=backend.render,
                piper_rate=piper_rate,
                rng=rng,
            )
            misses += missed
        genuine, rate = said[dev_targets[0].name][0]
        rules = challenge_rules(encoder, checker, wav_bytes(genuine, rate), phrases[0], n=5)
    finally:
        backend.close()
    threshold = choose_threshold(trials["dev"])
    target_names = {"dev": dev_targets, "test": test_targets}
    result = {
        "command": f"chorus bench-consent --phrases {num_phrases} --seed {args.seed}"
        + (" --quick" if args.quick else ""),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "threshold": threshold,
        "phrases": phrases,
        "other_voices": [s.name for s in other_voices],
        "sets": {
            name: {
                "targets": [s.name for s in target_names[name]],
                "table": table(tr),
                "similarity": similarity_summary(tr),
                "at_threshold": {r: v for r, v in _row(table(tr), threshold).items() if r != "threshold"},
            }
            for name, tr in trials.items()
        },
        "genuine_phrase_misses": misses,
        "challenge_rules": rules,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "consent.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result)
    (args.out / "consent.md").write_text(markdown)
    write_plot(result, trials, args.out / "consent.png")
    print(markdown)
    print(f"wrote {args.out / 'consent.json'}, consent.md, consent.png in {result['seconds']} s")
    return 0


def _row(rows: list[dict[str, float]], threshold: float) -> dict[str, float]:
    return next(r for r in rows if r["threshold"] == threshold)
