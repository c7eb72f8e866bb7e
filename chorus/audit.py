"""Writing the audit trail without delaying audio: rows go through a queue to one writer thread.

A row that cannot be written is retried; if it still fails it is logged whole at ERROR (so it survives in the
logs) and counted in ``failures``, never dropped in silence. ``SynthesisReceipt`` collects what one synthesis
row needs (who, which voice, a hash of the text and of every audio byte delivered, latency, outcome) while the
response streams, and hands the row to the writer once, when the response ends however it ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from chorus.store.audit import AuditLog

log = logging.getLogger(__name__)
_RETRIES = 3
_STOP = object()
PURGE_EVERY_S = 24 * 3600.0
PURGE_CHECK_S = 60.0


class AuditWriter:
    def __init__(self, audit: AuditLog, *, retention_days: float | None = None) -> None:
        self.audit = audit
        self.retention = None if retention_days is None else timedelta(days=retention_days)
        self.written = 0
        self.failures = 0
        self.purged = 0
        self._last_purge = -math.inf
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="chorus-audit", daemon=True)
        self._thread.start()

    def record(self, kind: str, *, tenant_id: str, **fields: Any) -> None:
        """Queue a row (returns at once)."""
        self._queue.put((kind, tenant_id, fields))

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every row queued so far is written (or has failed)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout_s)

    def _run(self) -> None:
        while True:
            self._purge_when_due()
            try:
                item = self._queue.get(timeout=PURGE_CHECK_S)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            kind, tenant_id, fields = item
            for attempt in range(_RETRIES):
                try:
                    self.audit.append(kind, tenant_id=tenant_id, **fields)
                    self.written += 1
                    break
                except Exception:
                    if attempt == _RETRIES - 1:
                        self.failures += 1
                        row = json.dumps({"kind": kind, "tenant_id": tenant_id, **fields}, default=str)
                        log.exception("audit: a row could not be written; here it is: %s", row)
                    else:
                        time.sleep(0.05 * 2**attempt)

    def _purge_when_due(self) -> None:
        """Retention: once at start and then daily, on this thread (it never delays a response)."""
        if self.retention is None or time.monotonic() - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = time.monotonic()
        try:
            self.purged += self.audit.purge(self.retention)
        except Exception:
            log.exception("audit: retention purge failed; it is tried again in a day")


class SynthesisReceipt:
    """One synthesis as the audit trail records it; ``seal`` writes the row (only the first call counts)."""

    def __init__(
        self,
        writer: AuditWriter | None,
        *,
        tenant_id: str,
        key_id: str | None,
        voice_id: str,
        request_id: str,
        text: str,
        response_format: str | None = None,
    ) -> None:
        self._writer = writer
        self._fields: dict[str, Any] = {
            "request_id": request_id,
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "text_chars": len(text),
            "format": response_format,
        }
        self.tenant_id, self.key_id, self.voice_id = tenant_id, key_id, voice_id
        self._audio = hashlib.sha256()
        self._bytes = 0
        self._started = time.monotonic()
        self._first_byte_s: float | None = None
        self.audio_seconds = 0.0
        self.watermark: Mapping[str, Any] | None = None
        self._sealed = False
        self._lock = threading.Lock()

    def delivered(self, data: bytes) -> None:
        """Bytes that left for the client, in order."""
        if not data:
            return
        if self._first_byte_s is None:
            self._first_byte_s = time.monotonic() - self._started
        self._audio.update(data)
        self._bytes += len(data)

    def seal(self, outcome: str) -> None:
        with self._lock:
            if self._sealed:
                return
            self._sealed = True
        if self._writer is None:
            return
        detail = {
            **self._fields,
            "outcome": outcome,
            "audio_sha256": self._audio.hexdigest(),
            "audio_bytes": self._bytes,
            "audio_seconds": round(self.audio_seconds, 3),
            "first_byte_s": None if self._first_byte_s is None else round(self._first_byte_s, 4),
            "total_s": round(time.monotonic() - self._started, 4),
            "watermark": dict(self.watermark) if self.watermark is not None else None,
        }
        self._writer.record(
            "synthesis", tenant_id=self.tenant_id, key_id=self.key_id, subject=self.voice_id, detail=detail
        )
