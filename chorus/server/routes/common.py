"""What the speech routes share: turning a route's body into a speech order for the speech service."""

from __future__ import annotations

from chorus.errors import InvalidRequestError
from chorus.server.auth import Principal
from chorus.server.deps import ServerState
from chorus.server.schemas import SpeechKnobs
from chorus.speech import SpeechOrder, SpeechStream, synthesis_params


def request_id_from(header: str | None) -> str | None:
    """A caller may name its request (``X-Request-Id``) to poll ``GET /v1/requests/{id}`` while it waits."""
    if header is None:
        return None
    if not (1 <= len(header) <= 128) or not all(c.isalnum() or c in "-_.:" for c in header):
        raise InvalidRequestError("X-Request-Id must be 1-128 characters of [A-Za-z0-9-_.:]", param="X-Request-Id")
    return header


async def submit_speech(
    state: ServerState,
    *,
    text: str,
    text_param: str,
    voice: str | None,
    knobs: SpeechKnobs,
    speed: float,
    principal: Principal,
    instructions: str | None = None,
    x_request_id: str | None = None,
    response_format: str | None = None,
) -> SpeechStream:
    """Queue the request through the speech service; 4xx/429/503 errors raise here, before any audio."""
    params = synthesis_params(knobs, speed=speed, instructions=instructions)
    order = SpeechOrder(
        text,
        voice,
        params,
        priority=knobs.priority,
        tenant_id=principal.tenant_id,
        request_id=request_id_from(x_request_id),
        timeout_s=knobs.timeout,
        text_param=text_param,
        response_format=response_format,
        key_id=principal.key_id,
        max_concurrency=principal.max_concurrency,
        sample_rate=state.settings.server.output_sample_rate,
    )
    return await state.speech.open(order)
