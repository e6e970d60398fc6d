"""Schema changes that leave the service running while they run, for migrations.

A plain ``CREATE INDEX`` blocks every write to its table until the index is
built, and a plain ``DROP INDEX`` takes the table's ACCESS EXCLUSIVE lock,
which blocks reads too, and holds it to the end of the transaction: a
migration that dropped an index and then built others kept status calls,
history pages and claims waiting for the whole upgrade (seconds at a year of
history, bench/README.md). On PostgreSQL these helpers build and drop
indexes ``CONCURRENTLY``: the table stays readable and writable throughout.
``CONCURRENTLY`` cannot run inside a transaction, so each runs in Alembic's
``autocommit_block``, which commits what the migration did before it: a
migration using them must be safe to run again from any point, which the
``IF [NOT] EXISTS`` forms and :func:`create_index`'s clean-up of an invalid
index make it.

A backfill ``UPDATE`` of a whole table in one statement holds every row lock
it took (and, in the transaction of an ``ALTER TABLE``, that table lock) to
its end: :func:`update_in_batches` updates a primary key range at a time.

SQLite has no ``CONCURRENTLY``: readers under WAL never wait for the writer,
so the plain statements, in the migration's transaction, block no reader.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

log = logging.getLogger(__name__)

#: Rows per statement of :func:`update_in_batches` on PostgreSQL: well under a
#: second each.
BATCH_ROWS = 10_000


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _invalid_index(name: str) -> bool:
    """Whether an index of this name exists but is marked invalid: what a
    ``CREATE INDEX CONCURRENTLY`` leaves when it fails or is cancelled (the
    process killed, a timeout, a restart). PostgreSQL keeps such an index
    up to date on every write but never reads it, and ``IF NOT EXISTS``
    would take it for done."""
    valid = (
        op.get_bind()
        .execute(
            sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
        .scalar()
    )
    return valid is False


def create_index(name: str, table: str, columns: list[str], *, where: str | None = None) -> None:
    """``op.create_index`` (partial when ``where`` is given); on PostgreSQL
    ``CONCURRENTLY``, outside the migration's transaction, after dropping an
    invalid index of the same name left by an interrupted run."""
    predicate = sa.text(where) if where is not None else None
    if not _postgres():
        op.create_index(name, table, columns, unique=False, sqlite_where=predicate)
        return
    with op.get_context().autocommit_block():
        if _invalid_index(name):
            log.warning(
                "index %s was left invalid by an interrupted build: dropping it to build it again",
                name,
            )
            op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)
        op.create_index(
            name,
            table,
            columns,
            unique=False,
            if_not_exists=True,
            postgresql_concurrently=True,
            postgresql_where=predicate,
        )


def drop_index(name: str, table: str) -> None:
    """``op.drop_index``; on PostgreSQL ``CONCURRENTLY`` and ``IF EXISTS``
    (a run interrupted after the drop finds it gone), outside the
    migration's transaction."""
    if not _postgres():
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)


def update_in_batches(table: str, key: str, assignments: str, where: str) -> None:
    """``UPDATE table SET assignments WHERE where``; on PostgreSQL one range of
    :data:`BATCH_ROWS` rows of the single-column primary key ``key`` per
    statement, each committed on its own (outside the migration's
    transaction), so that a writer waits for one range's row locks at most.
    ``where`` must exclude the rows already updated, so that a run cut short
    and started again does only what is left."""
    if not _postgres():
        op.execute(f"UPDATE {table} SET {assignments} WHERE {where}")
        return
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        last: object = None
        while True:
            params: dict[str, object] = {"n": BATCH_ROWS}
            lower = ""
            if last is not None:
                params["last"] = last
                lower = f"{key} > :last AND "
            bound = bind.execute(
                sa.text(
                    f"SELECT max({key}) FROM (SELECT {key} FROM {table} WHERE {lower}TRUE"
                    f" ORDER BY {key} LIMIT :n) AS batch"
                ),
                params,
            ).scalar()
            if bound is None:
                return
            params.pop("n")
            bind.execute(
                sa.text(
                    f"UPDATE {table} SET {assignments} WHERE {lower}{key} <= :bound AND ({where})"
                ),
                {**params, "bound": bound},
            )
            last = bound
