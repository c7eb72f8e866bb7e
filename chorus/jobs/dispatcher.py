"""Delivers the webhook outbox: lease a due event, sign it with its tenant's secret(s), POST it once, record.

Retries back off exponentially with full jitter, up to ``max_attempts``; then the event is dead (listed for an
admin, who may replay it). Every replica runs one dispatcher; the leases keep them from sending one event at
the same moment, and an event whose dispatcher died is sent again once its lease expires (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from chorus.store.tables import utcnow
from chorus.store.webhooks import EventRecord, WebhookStore
from chorus.webhooks.delivery import DeliveryResult, backoff_s, deliver
from chorus.webhooks.signing import headers as signed_headers
from chorus.webhooks.ssrf import WebhookPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchConfig:
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 3600.0
    lease_s: float = 60.0
    poll_s: float = 1.0


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        policy: WebhookPolicy,
        config: DispatchConfig,
        *,
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.config = config
        self.on_attempt = on_attempt  # told each attempt's outcome: "delivered", "retry" or "dead"
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="chorus-webhooks")

    def wake(self) -> None:
        """An event may be due now (a job just ended): look without waiting for the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                event = await asyncio.to_thread(self.store.claim_due, self.config.lease_s)
            except Exception:
                log.exception("webhooks: cannot read the outbox")
                event = None
            if event is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_s)
                continue
            await self.send(event)

    async def send(self, event: EventRecord) -> str:
        """One attempt at one leased event; returns its outcome."""
        body = event.payload.encode()
        secrets = await asyncio.to_thread(self.store.signing_secrets, event.tenant_id)
        head = signed_headers(secrets, event.id, int(time.time()), body)
        head["content-type"] = "application/json"
        result: DeliveryResult = await deliver(event.url, body, head, self.policy)
        attempt = event.attempts + 1
        retry_at = None
        if not result.ok and result.retryable and attempt < self.config.max_attempts:
            delay = backoff_s(attempt, base_s=self.config.backoff_base_s, cap_s=self.config.backoff_cap_s)
            retry_at = utcnow() + timedelta(seconds=delay)
        outcome = "delivered" if result.ok else ("retry" if retry_at is not None else "dead")
        await asyncio.to_thread(
            lambda: self.store.record(
                event, delivered=result.ok, status=result.status, error=result.error, retry_at=retry_at
            )
        )
        level = logging.INFO if result.ok else logging.WARNING
        log.log(
            level,
            "webhook %s %s to %s: %s (status %s, attempt %d)",
            event.type,
            event.id,
            urlsplit(event.url).hostname,  # not the whole URL: its path or query may carry the receiver's token
            outcome,
            result.status,
            attempt,
        )
        if self.on_attempt is not None:
            self.on_attempt(outcome)
        return outcome
