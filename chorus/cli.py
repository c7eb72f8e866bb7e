"""``chorus serve | say | voices | keys | audit | bench | bench-qwen3 | bench-quality | bench-voices | bench-consent |
bench-watermark | bench-audit``."""

from __future__ import annotations

import argparse
import importlib
import sys
import wave
from pathlib import Path
from typing import Any

from chorus import __version__
from chorus.config import Settings, load_settings
from chorus.errors import ChorusError, ConfigError


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "server__host": getattr(args, "host", None),
        "server__port": getattr(args, "port", None),
        "worker__max_slots": getattr(args, "max_slots", None),
        "worker__mode": getattr(args, "mode", None),
    }
    return load_settings(args.config, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from chorus.models.registry import build_backend
    from chorus.server.app import create_app
    from chorus.server.auth import check_can_start
    from chorus.server.malloc import fix_mmap_threshold
    from chorus.server.observability import configure_logging
    from chorus.server.serve import serve
    from chorus.store.keys import KeyStore

    settings = _settings(args)
    configure_logging(settings.server.log_level, settings.log.format)
    fix_mmap_threshold(settings.server.malloc_mmap_threshold_kib)  # before the model's threads and buffers
    # Open the store and load the model before the server binds its port: a bad setting fails here, in one line.
    store = _open_store(settings)
    check_can_start(settings, KeyStore(store[0]))  # keys required (a public bind) but none exists: refuse
    app = create_app(settings, backend=build_backend(settings), store=store)
    return serve(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        drain_timeout_s=settings.server.drain_timeout_s,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    # One BLAS thread (before numpy loads): the Piper fit's mixture maths ran ~5x slower with a thread per core on
    # a machine shared with a server, and training is meant to take the cores live traffic leaves.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from chorus.finetune.worker import FineTuneWorker
    from chorus.models.registry import build_backend
    from chorus.server.observability import configure_logging

    settings = _settings(args)
    configure_logging(settings.server.log_level, settings.log.format)
    sql, blobs = _open_store(settings)
    try:
        worker = FineTuneWorker(settings, build_backend(settings), sql, blobs)
        worker.install_signals()
        return worker.run(once=args.once)
    finally:
        sql.close()


def _open_store(settings: Settings) -> tuple[Any, Any]:
    from chorus.store.settings import open_store

    try:
        return open_store(settings.store, settings.data_dir)
    except Exception as e:  # any driver's error: the URL, the server or the credentials are wrong
        raise ConfigError(f"store: cannot open the database or blob store: {type(e).__name__}: {e}") from e


def cmd_say(args: argparse.Namespace) -> int:
    import numpy as np

    from chorus.api import TTS
    from chorus.audio.encode import RESPONSE_FORMATS, make_encoder

    settings = _settings(args)
    out = Path(args.output)
    fmt = args.format or (out.suffix.lstrip(".").lower() or "wav")
    if fmt == "ogg":
        fmt = "opus"
    if fmt not in RESPONSE_FORMATS:
        raise ChorusError(f"cannot write {fmt!r}; use one of {', '.join(RESPONSE_FORMATS)}")
    with TTS(settings) as tts:
        audio = tts.synthesize(args.text, args.voice, speed=args.speed)
        rate = tts.sample_rate
    if fmt == "wav":
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    else:
        encoder = make_encoder(fmt, rate)
        out.write_bytes(encoder.encode(audio) + encoder.finish())
    print(f"wrote {out} ({audio.size / rate:.2f} s, {rate} Hz, {fmt})")
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    """Built-in voices, then the default tenant's cloned voices from the configured store."""
    from chorus.models.registry import build_backend
    from chorus.store import VoiceStore, open_store
    from chorus.store.tenants import DEFAULT_TENANT

    settings = _settings(args)
    backend = build_backend(settings)
    try:
        for v in backend.voices():
            print(f"{v.voice_id}\t{v.language}\tbuilt-in: {v.description}")
    finally:
        backend.close()
    sql, blobs = open_store(settings.store, settings.data_dir)
    try:
        for r in VoiceStore(sql, blobs).list(DEFAULT_TENANT):
            print(f"{r.id}\t{r.language}\tcloned: {r.name} ({r.duration_s:.1f} s reference)")
    finally:
        sql.close()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from chorus.cli_keys import run_keys

    return run_keys(args, _settings(args))


def cmd_audit(args: argparse.Namespace) -> int:
    from chorus.cli_audit import run_audit

    return run_audit(args, _settings(args))


def cmd_bench(args: argparse.Namespace) -> int:
    from chorus.bench.main import run_bench

    return run_bench(args)


def cmd_bench_voices(args: argparse.Namespace) -> int:
    from chorus.bench.voice_quality import main as run_voice_bench

    return run_voice_bench(list(args.args))


# name, module under chorus.bench (its add_arguments(parser) and run(args) -> int), help
BENCH_COMMANDS = (
    ("bench-qwen3", "qwen3", "Qwen3-TTS engine vs the library's generate() (needs the qwen extra)"),
    (
        "bench-quality",
        "quality_piper",
        "a lossy Piper option (int8, fewer context frames) through the audio-quality gate",
    ),
    ("bench-lora", "lora", "multi-LoRA serving: step time with k adapters in one batch vs merged vs none"),
    ("bench-jobs", "jobs", "a running batch job's cost to live streams' first audio and underruns"),
    ("bench-watermark", "watermark", "the audio watermark: detection after codecs and edits, false positives, cost"),
    (
        "bench-consent",
        "consent",
        "spoken consent: right speaker accepted, wrong phrase, other speakers and clones refused",
    ),
    ("bench-audit", "audit", "the audit trail: cost per request, rows/s written and verified"),
    ("bench-soak", "soak", "a flood of callers (200 or 429, never an error), then a soak at capacity: flat memory"),
    (
        "bench-agent",
        "agent",
        "voice-agent sessions: LLM tokens in, first audio, gaps and barge-in vs sentence-at-a-time requests",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="Continuous-batching text-to-speech server")
    parser.add_argument("--version", action="version", version=f"chorus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="YAML config file (CHORUS_* env vars override it)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the HTTP server"))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--max-slots", type=int)
    serve.add_argument("--mode", choices=["continuous", "static"])
    serve.set_defaults(func=cmd_serve)

    worker = with_config(sub.add_parser("worker", help="run background work: fine-tune jobs (--queue finetune)"))
    worker.add_argument("--queue", choices=["finetune"], default="finetune", help="which queue to take work from")
    worker.add_argument("--once", action="store_true", help="take at most one job, then exit")
    worker.set_defaults(func=cmd_worker)

    say = with_config(sub.add_parser("say", help="synthesise text to a file, no server"))
    say.add_argument("text")
    say.add_argument("-o", "--output", default="out.wav", help="output file; its extension picks the format")
    say.add_argument("--voice")
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--format", help="mp3|opus|aac|flac|wav|pcm (default: from the file extension)")
    say.set_defaults(func=cmd_say)

    voices = with_config(sub.add_parser("voices", help="list the voices"))
    voices.set_defaults(func=cmd_voices)

    from chorus.cli_keys import add_arguments as add_keys_arguments

    add_keys_arguments(sub.add_parser("keys", help="API keys: create, list, revoke"), cmd_keys)

    from chorus.cli_audit import add_arguments as add_audit_arguments

    add_audit_arguments(sub.add_parser("audit", help="the audit trail: verify, export, purge"), cmd_audit)

    from chorus.bench.main import add_bench_arguments

    bench = sub.add_parser("bench", help="load-test chorus against baselines over real HTTP")
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    for name, module, summary in BENCH_COMMANDS:
        bench_module = importlib.import_module(f"chorus.bench.{module}")
        command = sub.add_parser(name, help=summary)
        bench_module.add_arguments(command)
        command.set_defaults(func=bench_module.run)

    # Listed here for `chorus --help`; main() hands it the rest of the line (`chorus bench-voices --help`).
    voice_bench = sub.add_parser(
        "bench-voices", help="cloning quality on Piper: similarity to target speakers, conversion cost", add_help=False
    )
    voice_bench.add_argument("args", nargs=argparse.REMAINDER)
    voice_bench.set_defaults(func=cmd_bench_voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # bench-voices owns the rest of the line (argparse would read its --options as chorus's own).
    args = argparse.Namespace(func=cmd_bench_voices, args=argv[1:]) if argv[:1] == ["bench-voices"] else None
    args = args or parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"chorus: config error: {e.message}", file=sys.stderr)
        return 2
    except ChorusError as e:
        print(f"chorus: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
