"""Consent challenges and consents in the store (chorus.store.consents) on SQLite and PostgreSQL: a challenge
is used once and not after it expires, even by two replicas at once; a consent authorises one voice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from chorus.store.consents import ConsentInUseError, ConsentNotFoundError, ConsentStore
from chorus.store.tables import ChallengeRecord, utcnow
from chorus.store.voices import VoiceStore
from tests.store.fixtures import Backend


@pytest.fixture
def consents(database: Backend) -> Iterator[ConsentStore]:
    sql, blobs = database.open()
    yield ConsentStore(sql, blobs)
    sql.close()


def consent(store: ConsentStore, challenge: ChallengeRecord, tenant: str = "default") -> str:
    record = store.create(
        tenant, name="Sam", language="en", challenge=challenge, recording=b"RIFF recording", embedding=b"\0" * 1024
    )
    return record.id


def test_a_challenge_is_used_once_and_not_after_it_expires(consents: ConsentStore) -> None:
    fresh = consents.issue("default", "apple river garden window silver orange", 60.0)
    assert consents.use_challenge("default", fresh.id) == "ok"
    assert consents.use_challenge("default", fresh.id) == "used"
    late = consents.issue("default", "apple river garden window silver orange", 60.0)
    assert consents.use_challenge("default", late.id, now=late.expires_at + timedelta(seconds=1)) == "expired"
    assert consents.use_challenge("default", late.id) == "ok"  # the failed late attempt did not use it
    assert consents.use_challenge("other", fresh.id) == "unknown"  # another tenant's id
    with pytest.raises(ConsentNotFoundError):
        consents.challenge("other", fresh.id)


def test_two_attempts_racing_for_one_challenge_only_one_wins(database: Backend) -> None:
    """Two stores (two replicas' connections) on one database, several threads each."""
    stores = []
    for _ in range(2):
        sql, blobs = database.open()
        stores.append(ConsentStore(sql, blobs))
    try:
        challenge = stores[0].issue("default", "one two three four five six", 60.0)
        results: list[str] = []
        barrier = threading.Barrier(6)

        def attempt(store: ConsentStore) -> None:
            barrier.wait()
            results.append(store.use_challenge("default", challenge.id))

        threads = [threading.Thread(target=attempt, args=(stores[i % 2],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["ok"] + ["used"] * 5
    finally:
        for store in stores:
            store.sql.close()


def test_a_consent_authorises_one_voice_and_is_kept_while_that_voice_exists(database: Backend) -> None:
    sql, blobs = database.open()
    try:
        store, voices = ConsentStore(sql, blobs), VoiceStore(sql, blobs)
        challenge = store.issue("default", "one two three four five six", 60.0)
        consent_id = consent(store, challenge)
        assert store.get("default", consent_id).phrase == challenge.phrase
        assert blobs.get(store.get("default", consent_id).recording_key) == b"RIFF recording"
        assert not store.claim("other", consent_id, "voice_x")  # another tenant's consent
        voice = voices.create(
            "default", "Sam", "en", None, b"a", b"b", b"c", duration_s=3.0, sample_rate=24_000, consent_id=consent_id
        )
        assert voice.consent_status == "verified"
        assert store.claim("default", consent_id, voice.id)
        assert not store.claim("default", consent_id, "voice_other")  # one voice per consent
        with pytest.raises(ConsentInUseError):
            store.delete("default", consent_id)
        voices.delete("default", voice.id)
        store.delete("default", consent_id)
        with pytest.raises(ConsentNotFoundError):
            store.get("default", consent_id)
        assert not blobs.exists(f"consents/default/{consent_id}/recording")
    finally:
        sql.close()


def test_claims_by_registrations_that_never_finished_are_released(consents: ConsentStore) -> None:
    challenge = consents.issue("default", "one two three four five six", 60.0)
    consent_id = consent(consents, challenge)
    assert consents.claim("default", consent_id, "voice_crashed_before_ready")
    assert consents.release_orphans() == 1
    assert consents.get("default", consent_id).voice_id is None
    consents.release(consent_id, "voice_never")  # releasing a claim it does not hold changes nothing
    assert consents.claim("default", consent_id, "voice_next")
    consents.release(consent_id, "voice_next")
    assert consents.get("default", consent_id).voice_id is None


def test_lists_are_per_tenant_and_expired_challenges_are_purged(consents: ConsentStore) -> None:
    mine = consent(consents, consents.issue("default", "one two three four five six", 60.0))
    theirs = consent(consents, consents.issue("acme", "one two three four five six", 60.0), "acme")
    assert [c.id for c in consents.list("default")] == [mine]
    assert [c.id for c in consents.list("acme")] == [theirs]
    old = consents.issue("default", "one two three four five six", 0.001)
    assert old.expires_at < utcnow() + timedelta(seconds=1)
    assert consents.purge_challenges(timedelta(seconds=-10)) >= 1  # expired ones go; live ones stay
    with pytest.raises(ConsentNotFoundError):
        consents.challenge("default", old.id)
