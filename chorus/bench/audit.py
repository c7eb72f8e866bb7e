"""``chorus bench-audit``: what the audit trail costs a request, how fast rows are written, how fast a chain
verifies — on the database the server would use (SQLite by default; ``--database-url`` for PostgreSQL).

The request path only queues a row (``AuditWriter.record``); a thread writes it. So the figures are: the time
``record`` takes on the caller's thread (what a request pays), the rows per second the writer sustains with
synthesis-sized rows (each a hash-chained INSERT in its own transaction), and ``chorus audit verify``'s rows per
second over the whole chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from chorus.audit import AuditWriter
from chorus.store.audit import AuditLog
from chorus.store.settings import StoreConfig, open_store


def synthesis_detail(i: int) -> dict[str, Any]:
    """A row the size of a real synthesis row."""
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return {
        "request_id": f"req_{i:012d}",
        "text_sha256": digest,
        "text_chars": 180,
        "format": "mp3",
        "outcome": "ok",
        "audio_sha256": digest,
        "audio_bytes": 160_000,
        "audio_seconds": 10.0,
        "first_byte_s": 0.12,
        "total_s": 1.1,
        "watermark": {"payload": i % 65536, "key_id": "afe513137f12"},
    }


def run_once(database_url: str | None, rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        sql, _ = open_store(StoreConfig(database_url=database_url), Path(tmp))
        try:
            log = AuditLog(sql)
            writer = AuditWriter(log)
            enqueue: list[float] = []
            started = time.perf_counter()
            for i in range(rows):
                t0 = time.perf_counter()
                writer.record(
                    "synthesis", tenant_id="default", key_id=None, subject="voice_x", detail=synthesis_detail(i)
                )
                enqueue.append(time.perf_counter() - t0)
            writer.flush(timeout_s=600)
            written_s = time.perf_counter() - started
            writer.close()
            t0 = time.perf_counter()
            verified = log.verify()
            verify_s = time.perf_counter() - t0
        finally:
            sql.close()
    if not verified.ok or verified.rows != rows:
        raise RuntimeError(f"the chain did not verify: {verified}")
    enqueue.sort()
    return {
        "record_p50_us": 1e6 * enqueue[len(enqueue) // 2],
        "record_p99_us": 1e6 * enqueue[int(0.99 * (len(enqueue) - 1))],
        "write_rows_per_s": rows / written_s,
        "verify_rows_per_s": rows / verify_s,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=2000, help="rows per repeat (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats: min / median / max (default 3)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for audit.json")


def run(args: argparse.Namespace) -> int:
    results = [run_once(args.database_url, args.rows) for _ in range(args.repeats)]
    summary = {
        key: {
            "min": round(min(r[key] for r in results), 1),
            "median": round(statistics.median(r[key] for r in results), 1),
            "max": round(max(r[key] for r in results), 1),
        }
        for key in results[0]
    }
    backend = "sqlite" if args.database_url is None else args.database_url.split(":", 1)[0]
    out = {"command": f"chorus bench-audit --rows {args.rows} --repeats {args.repeats}", "database": backend}
    out["results"] = summary
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"audit trail on {backend}, {args.rows} synthesis rows x {args.repeats} repeats (min / median / max):")
    for key, s in summary.items():
        print(f"  {key:20s} {s['min']:>10} / {s['median']:>10} / {s['max']:>10}")
    return 0
