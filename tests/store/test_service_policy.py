"""A storage service that cannot start: skipped loudly on a developer's machine, a failure under CI."""

from __future__ import annotations

import pytest

from tests.store import fixtures


def test_a_missing_service_fails_the_run_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "_UNAVAILABLE", {})  # keep this test's fake service out of the run's banner
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI requires it: no initdb"):
        fixtures._unavailable("PostgreSQL", "no initdb")


def test_a_missing_service_skips_its_tests_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "_UNAVAILABLE", {})
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="could not start"):
        fixtures._unavailable("PostgreSQL", "no initdb")
    assert fixtures._UNAVAILABLE == {"PostgreSQL": "no initdb"}  # named in the end-of-run banner
