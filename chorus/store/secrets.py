"""Server-wide secrets in the database, so that every replica sharing it uses the same one.

``shared_secret`` inserts a fresh random value unless the name exists, then reads back whichever value won: two
replicas starting at once agree (the primary key refuses the second insert).
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from chorus.store.sql import SqlStore
from chorus.store.tables import SecretRow, utcnow

SECRET_BYTES = 32


def shared_secret(sql: SqlStore, name: str) -> bytes:
    with sql.session() as session:
        row = session.get(SecretRow, name)
        if row is not None:
            return bytes(row.value)
        session.add(SecretRow(name=name, value=secrets.token_bytes(SECRET_BYTES), created_at=utcnow()))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
    with sql.session() as session:
        row = session.get(SecretRow, name)
        if row is None:
            raise RuntimeError(f"the secret {name!r} could not be stored")
        return bytes(row.value)
