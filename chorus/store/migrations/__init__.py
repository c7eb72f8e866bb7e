"""Alembic migrations of the chorus schema, run in code by ``SqlStore.migrate`` (there is no alembic.ini).

A new revision goes in ``versions/`` as ``vNNNN_<what>.py`` with ``down_revision`` set to the previous one.
"""
