"""Alembic environment: uses the caller's connection when given one.

Each revision runs in a transaction of its own (``transaction_per_migration``)
and is committed when it is done: in one transaction for the whole upgrade,
the locks a revision took (``ALTER TABLE``'s ACCESS EXCLUSIVE, which blocks
reads as well as writes) were held through every later revision, and a
failure threw away the revisions already done. A revision may also commit
part way (``autocommit_block``, for PostgreSQL's ``CONCURRENTLY``), which
needs Alembic to own the transactions.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from upscayl_cloud.db.tables import metadata

config = context.config


def _run_on(connection: Connection) -> None:
    # Alembic runs everything inside a transaction the connection is already
    # in (and never commits it) instead of its own per revision: end the one
    # the caller's reads (the revision check in db/migrate.py) began.
    if connection.in_transaction():
        connection.commit()
    context.configure(
        connection=connection, target_metadata=metadata, transaction_per_migration=True
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run_on(connection)


run()
