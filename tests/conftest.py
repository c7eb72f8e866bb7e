from __future__ import annotations

import pytest

from chorus.models.piper import PiperBackend

# Real PostgreSQL and S3 servers, and the storage backends built on them, for tests/store and tests/e2e.
pytest_plugins = ["tests.store.fixtures"]


@pytest.fixture(scope="session")
def piper() -> PiperBackend:
    """One bundled-voice backend for the whole session (loading takes about a second)."""
    backend = PiperBackend(num_workers=2)
    yield backend
    backend.close()
