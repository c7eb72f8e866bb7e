"""Alembic environment: runs on the connection that ``SqlStore.migrate`` passes in (and whose lock it holds)."""

from __future__ import annotations

from alembic import context

from chorus.store.tables import Base

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("chorus migrations run online through chorus.store.sql.SqlStore.migrate()")

# SQLite cannot ALTER most things in place; batch mode copies the table instead (used by later revisions).
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
