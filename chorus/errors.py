"""Typed errors. Each maps to one HTTP status and an OpenAI-style error type, in one place."""

from __future__ import annotations


class ChorusError(Exception):
    """Base of every error chorus raises on purpose."""

    status_code = 500
    error_type = "server_error"
    # A machine-readable reason within the type (e.g. "too_short"), sent as error.code when set.
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(ChorusError):
    """A setting is missing or invalid; the message names the key."""


class InvalidRequestError(ChorusError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(ChorusError):
    """No key, or a key this server does not accept (malformed, unknown, revoked); ``code`` says which."""

    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class PermissionDeniedError(ChorusError):
    """A valid key without the role this needs (an admin key of the tenant)."""

    status_code = 403
    error_type = "permission_error"
    code = "admin_required"


class NotFoundError(ChorusError):
    status_code = 404
    error_type = "not_found_error"


class QueueFullError(ChorusError):
    """The waiting queue is at its limit; retry after ``retry_after_s`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.code = code


class RequestTimeoutError(ChorusError):
    status_code = 504
    error_type = "timeout_error"


class RequestAbortedError(ChorusError):
    """The request was cancelled (client gone, or aborted by the caller)."""

    status_code = 499
    error_type = "aborted"


class EngineDeadError(ChorusError):
    """The engine loop failed; every waiting and running request gets this error."""

    status_code = 503
    error_type = "engine_error"


class EngineStalledError(EngineDeadError):
    """A backend step ran past ``worker.stall_timeout_s``: the engine is declared dead (see chorus.engine.engine)."""

    code = "engine_stalled"


class SynthesisError(ChorusError):
    """The backend failed on this request only (others go on)."""

    status_code = 500
    error_type = "server_error"
