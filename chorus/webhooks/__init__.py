"""Webhooks: POSTing batch-job results to customers' URLs without letting those URLs reach chorus's own network.

``ssrf`` decides which URLs and addresses are acceptable and pins each delivery to one checked address;
``signing`` signs deliveries the Standard Webhooks way so receivers can trust them; ``delivery`` makes one
bounded attempt and says whether it is worth retrying. The job system above owns queueing and retries.
Signing is used as a module (``signing.headers(...)``, ``signing.verify(...)``): its names are too generic to
re-export here.
"""

from chorus.webhooks.delivery import USER_AGENT, DeliveryResult, backoff_s, deliver
from chorus.webhooks.ssrf import Target, WebhookPolicy, WebhookURLError, blocked_reason, check_url, resolve

__all__ = [
    "USER_AGENT",
    "DeliveryResult",
    "Target",
    "WebhookPolicy",
    "WebhookURLError",
    "backoff_s",
    "blocked_reason",
    "check_url",
    "deliver",
    "resolve",
]
