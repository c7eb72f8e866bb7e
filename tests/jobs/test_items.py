"""A stored job item becomes a background speech order at the job priority."""

from __future__ import annotations

from chorus.jobs.items import JobItem, order_of
from chorus.jobs.runner import JOB_PRIORITY


def test_a_job_item_is_a_background_order() -> None:
    spec = JobItem.model_validate({"input": "Hello there.", "voice": "alloy"}).model_dump()
    order = order_of(spec, tenant_id="t1", priority=JOB_PRIORITY)
    assert order.background  # nobody listens while it is made: idle CPU only, no playback deadline
    assert (order.text, order.voice, order.priority, order.tenant_id) == ("Hello there.", "alloy", JOB_PRIORITY, "t1")
