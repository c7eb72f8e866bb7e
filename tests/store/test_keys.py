"""API keys in the store (chorus.store.keys) on SQLite and PostgreSQL: hashed, revocable, seen by every replica."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from chorus.store.keys import KeyRejected, KeyStore
from chorus.store.tables import ApiKeyRow
from tests.store.fixtures import Backend


@pytest.fixture
def keys(database: Backend) -> Iterator[KeyStore]:
    sql, _ = database.open()
    yield KeyStore(sql)
    sql.close()


def split_key(key: str) -> tuple[str, str]:
    """``sk-chorus-<16 hex id>-`` and the secret (which may itself hold "-")."""
    head = len("sk-chorus-") + 16 + 1
    return key[:head], key[head:]


def rejection(keys: KeyStore, key: str) -> str:
    with pytest.raises(KeyRejected) as e:
        keys.authenticate(key)
    return e.value.reason


def test_a_key_authenticates_as_its_tenant_and_only_its_hash_is_stored(keys: KeyStore) -> None:
    key, record = keys.create("acme", role="admin", max_concurrency=3)
    found = keys.authenticate(key)
    assert (found.id, found.tenant_id, found.role, found.max_concurrency) == (record.id, "acme", "admin", 3)
    secret = split_key(key)[1]
    with keys.sql.session() as session:
        row = session.scalars(select(ApiKeyRow)).one()
        stored = [str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns]
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in value or key in value for value in stored)
    assert [r.id for r in keys.list()] == [record.id] and keys.count_active() == 1


def test_wrong_malformed_and_unknown_keys_are_rejected(keys: KeyStore) -> None:
    key, _ = keys.create("acme")
    head, secret = split_key(key)
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    assert rejection(keys, head + other_secret) == "unknown"  # right id, wrong secret
    assert rejection(keys, "sk-chorus-0123456789abcdef-" + "x" * 43) == "unknown"  # no such id
    assert rejection(keys, "not-a-key") == "malformed"
    assert rejection(keys, key + "x") == "malformed"


def test_revocation_is_seen_by_another_replica_at_once(keys: KeyStore, database: Backend) -> None:
    key, record = keys.create("acme")
    other_sql, _ = database.open()  # a second process on the same database
    try:
        other = KeyStore(other_sql)
        assert other.authenticate(key).id == record.id
        assert keys.revoke(record.id)
        assert rejection(other, key) == "revoked"
        first = other.list()[0].revoked_at
        assert other.revoke(record.id)  # twice: still revoked, at the first time
        assert other.list()[0].revoked_at == first
        assert keys.count_active() == 0
    finally:
        other_sql.close()
    assert not keys.revoke("key_0123456789abcdef") and not keys.revoke("nonsense")


def test_bad_settings_are_refused(keys: KeyStore) -> None:
    with pytest.raises(ValueError, match="role"):
        keys.create("acme", role="root")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        keys.create("acme", max_concurrency=0)
    with pytest.raises(ValueError, match="tenant"):
        keys.create("a/b")
    assert keys.list() == []


def test_keys_keep_to_their_tenant(keys: KeyStore) -> None:
    a, _ = keys.create("tenant-a")
    b, _ = keys.create("tenant-b")
    assert (keys.authenticate(a).tenant_id, keys.authenticate(b).tenant_id) == ("tenant-a", "tenant-b")
    assert {r.tenant_id for r in keys.list("tenant-a")} == {"tenant-a"}
