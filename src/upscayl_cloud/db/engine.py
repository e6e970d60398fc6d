"""Building the database engine, with the settings SQLite needs to be a queue.

SQLite: WAL so readers never block the writer, a busy timeout so concurrent
writers wait instead of failing, foreign keys on, and every transaction
opened with ``BEGIN IMMEDIATE`` so the claim of a task (read then write)
cannot interleave with another claim, except those opened by ``reading``,
which only read: they take a WAL snapshot and no write lock, so status
calls and history pages never queue behind each other or behind a worker's
write. PostgreSQL needs none of this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc

#: Execution option of a transaction that only reads (see ``reading``).
READ_ONLY = "upscayl_read_only"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, busy timeout and immediate transactions."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would
        # otherwise start deferred transactions on its own).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # query_only is the connection's, so every transaction sets its own.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("PRAGMA query_only=ON")
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("PRAGMA query_only=OFF")
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached right now (down,
    restarting, connection dropped, pool exhausted, SQLite locked too long),
    as opposed to a bug: the caller may answer 503 and let the client retry."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds, the unit of every stored time."""
    return time.time_ns() // 1_000_000


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back on error."""
    with engine.begin() as connection:
        yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One transaction that only reads: a consistent snapshot of the database.

    On SQLite it is a deferred transaction, not ``BEGIN IMMEDIATE``: under
    WAL a reader takes no write lock, where an immediate one takes the
    single write lock and waits its turn in the busy handler's sleeps
    (bench/README.md, "API requests"). A write inside it would work only
    until another writer got there first, so both databases refuse any
    write here at once (SQLite's ``query_only``, PostgreSQL's ``READ
    ONLY`` transaction, reset when the connection goes back to the pool):
    use ``engine.begin()`` for anything that writes."""
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        if connection.dialect.name == "postgresql":
            connection.execution_options(postgresql_readonly=True)
        with connection.begin():
            yield connection
