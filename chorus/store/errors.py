"""Storage errors that reach clients: each maps to one HTTP status through ``chorus.errors``."""

from __future__ import annotations

from chorus.errors import ChorusError, NotFoundError


class VoiceExistsError(ChorusError):
    """A voice with this name already exists in the tenant (names are unique per tenant, so clients can use them)."""

    status_code = 409
    error_type = "conflict_error"


class VoiceNotFoundError(NotFoundError):
    """No ready voice with this id in the caller's tenant (another tenant's voice is reported the same way)."""


class TenantNotFoundError(NotFoundError):
    """The tenant does not exist; voices hang off a tenant row by foreign key."""
