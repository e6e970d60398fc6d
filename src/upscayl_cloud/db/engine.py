"""Building the database engine, with the settings SQLite needs to be a queue.

SQLite: WAL so readers never block the writer, a busy timeout so concurrent
writers wait instead of failing, foreign keys on, and every transaction
opened with ``BEGIN IMMEDIATE`` so the claim of a task (read then write)
cannot interleave with another claim. PostgreSQL needs none of this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc


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
