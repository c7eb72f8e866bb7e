"""Drive vTTS's library (``vtts.worker.ContinuousWorker``) for ``chorus bench-qwen3``: a baseline run in its own venv.

This file runs under vTTS's python, not chorus's: it imports only the standard library, numpy, torch and
vTTS (with the qwen-tts fork it was written against), and is started by path (``python vtts_driver.py``). It
loads the checkpoint folder once, then answers one JSON request per stdin line with one JSON line on stdout
(logs go to stderr), so that the bench can interleave warm runs of chorus and vTTS:

    {"texts": [...], "speakers": [...], "language": "english", "frames": 60}
    → {"step_s": [...], "first_audio_s": [...], "frames": [...], "audio_s": ..., "wall_s": ..., ...}

A run mirrors chorus's: every request is prefilled at t0 (vTTS prefills one request at a time), then
``step()`` runs until every slot has finished; a request's first audio is the first non-empty chunk in its
queue, seen after the step (or prefill) that produced it. vTTS's sampling is its own (talker temperature 0.9 /
top-k 50, code predictor temperature 1.0 / top-k 50, one global RNG), seeded per run with ``torch.manual_seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

WARMUP_FRAMES = 4  # load_model()'s own warm-up would generate up to 2048 frames: a random talker never stops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vTTS baseline driver for chorus bench-qwen3 (JSON lines)")
    parser.add_argument("--model", required=True, help="Qwen3-TTS CustomVoice checkpoint folder")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-slots", type=int, default=64)
    parser.add_argument("--emit-every-frames", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs in bfloat16, cpu in float32)")
    args = parser.parse_args(argv)
    # Results go to the real stdout; anything the libraries print (qwen-tts prints a banner) goes to stderr.
    results, sys.stdout = sys.stdout, sys.stderr

    try:
        import torch

        torch.set_num_threads(args.threads)
        worker = _load(args, torch)
    except ImportError as e:
        error = f"{e}: this python needs vTTS (caimari/vtts) and the qwen-tts fork it was written against"
        print(json.dumps({"ready": False, "error": error}), file=results, flush=True)
        return 1
    ready = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(ready), file=results, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        torch.manual_seed(int(job.get("seed", 0)))
        print(json.dumps(_run(worker, job)), file=results, flush=True)
    return 0


def _load(args: argparse.Namespace, torch: Any) -> Any:
    import qwen_tts
    from vtts.worker import ContinuousWorker

    original = qwen_tts.Qwen3TTSModel.generate_custom_voice

    def capped_warmup(self: Any, *a: Any, **kw: Any) -> Any:
        kw.setdefault("max_new_tokens", WARMUP_FRAMES)
        return original(self, *a, **kw)

    device = "cuda:0" if args.device == "cuda" else args.device
    worker = ContinuousWorker(
        model_name=args.model,
        device=device,
        dtype=torch.float32 if device == "cpu" else torch.bfloat16,
        max_slots=args.max_slots,
        emit_every_frames=args.emit_every_frames,
        max_frames=10**9,  # set per run
    )
    qwen_tts.Qwen3TTSModel.generate_custom_voice = capped_warmup
    try:
        worker.load_model()
    finally:
        qwen_tts.Qwen3TTSModel.generate_custom_voice = original
    # Every request runs exactly its `frames` frames, as chorus's do in the bench. vTTS stops a stream when code 0
    # is any id of its stop set, which mixes codec ids with text-vocabulary ids (im_end, tts_eos): harmless with
    # the real 151k text vocabulary, but in the tiny model those text ids are ordinary audio codes, so streams
    # stopped at random. No stop ids, and every codec special suppressed (a special fed back as a code would
    # index past the codec's codebooks); the work per step is the same.
    vocab = int(worker._vocab_size)
    worker._eos_ids = set()
    worker._suppress_tokens = list(range(vocab - 1024, vocab))
    return worker


def _run(worker: Any, job: dict[str, Any]) -> dict[str, Any]:
    from vtts.worker import TTSRequest

    worker.max_frames = int(job["frames"])
    texts, speakers = job["texts"], job["speakers"]
    first: dict[int, float] = {}
    samples = [0] * len(texts)
    ended = [False] * len(texts)
    requests: list[Any] = []
    slots: list[Any] = []

    def drain(t0: float) -> None:
        now = time.perf_counter() - t0
        for i, req in enumerate(requests):
            queue: asyncio.Queue[Any] = req.chunk_queue
            while not queue.empty():
                chunk = queue.get_nowait()
                if chunk is None:
                    ended[i] = True
                elif len(chunk):
                    first.setdefault(i, now)
                    samples[i] += len(chunk)

    t0 = time.perf_counter()
    for i, (text, speaker) in enumerate(zip(texts, speakers, strict=True)):
        req = TTSRequest(request_id=f"r{i}", text=text, voice_id=speaker, language=job.get("language", "english"))
        requests.append(req)
        slots.append(worker.prefill_slot_speaker(req))
    prefill_s = time.perf_counter() - t0
    drain(t0)
    steps: list[float] = []
    while worker.slots:
        s0 = time.perf_counter()
        worker.step()
        steps.append(time.perf_counter() - s0)
        drain(t0)
    wall = time.perf_counter() - t0
    rate = int(requests[0].sample_rate or 24_000)
    return {
        "prefill_s": prefill_s,
        "step_s": steps,
        "first_audio_s": [first.get(i, float("nan")) for i in range(len(texts))],
        "frames": [len(slot.codes_buffer) for slot in slots],  # codec frames generated (EOS or the cap ends it)
        "samples": samples,
        "finished": ended,
        "audio_s": sum(samples) / rate,
        "wall_s": wall,
        "sample_rate": rate,
    }


if __name__ == "__main__":
    sys.exit(main())
