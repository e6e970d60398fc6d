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

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc

#: Execution option of a transaction that only reads (see ``reading``).
READ_ONLY = "upscayl_read_only"


#: libpq's defaults wait as long as the kernel does for a peer that vanished
#: (a host powered off, a failover's dead address, a firewall dropping idle
#: connections): about 15 minutes of TCP retransmissions, each request
#: holding a pooled connection all along instead of answering 503. These
#: notice it within about a minute; a URL's own ``?connect_timeout=...``
#: (any of them) wins.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms: data sent but never acknowledged
}


def make_engine(url: str) -> Engine:
    """An engine for ``url``: PostgreSQL with dead-peer timeouts, SQLite with
    WAL, busy timeout and immediate transactions."""
    if not url.startswith("sqlite"):
        given = set(make_url(url).query)
        if os.environ.get("PGCONNECT_TIMEOUT"):  # libpq's own setting, which ours would hide
            given.add("connect_timeout")
        connect_args = {k: v for k, v in POSTGRES_CONNECT_ARGS.items() if k not in given}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
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


#: This process's clock's lag behind the database's, in milliseconds, as
#: :func:`sync_clock` last measured it.
_clock_offset_ms = 0
#: A difference worth a warning: well within a lease (60 s by default), far
#: beyond what NTP leaves (milliseconds).
CLOCK_WARNING_MS = 1000

log = logging.getLogger(__name__)


#: The database's time at the last :func:`sync_clock`, in Unix milliseconds,
#: and :func:`_elapsed_ns` then; None on SQLite, whose clock is this machine's.
_anchor: tuple[int, int] | None = None

#: Nanoseconds that only move forward, at the rate of real time, sleep
#: included (CLOCK_BOOTTIME; CLOCK_MONOTONIC where there is none).
_elapsed_ns: Callable[[], int] = (
    partial(time.clock_gettime_ns, time.CLOCK_BOOTTIME)
    if hasattr(time, "CLOCK_BOOTTIME")
    else time.monotonic_ns
)


def now_ms() -> int:
    """The database's time in Unix milliseconds, the unit of every stored
    time: on PostgreSQL, the database's time at the last :func:`sync_clock`
    plus the time elapsed since. Leases, expiries and retention are written
    by one machine and compared by another; with each machine's own clock, a
    worker whose clock ran a lease ahead took over tasks that their workers
    were still renewing, and its sweeper failed them. Elapsed time, not this
    machine's clock: a clock stepped between two syncs (NTP, a resumed VM, a
    date set by hand) would otherwise write leases already expired, or take
    live ones, until the next sync."""
    anchor = _anchor
    if anchor is None:
        return time.time_ns() // 1_000_000
    database_ms, elapsed_ns = anchor
    return database_ms + (_elapsed_ns() - elapsed_ns) // 1_000_000


def sync_clock(engine: Engine) -> int:
    """Measure how far this machine's clock is from the database's and
    correct :func:`now_ms` by it; returns the difference in milliseconds.

    PostgreSQL is asked its ``clock_timestamp()``, taken as read halfway
    through the round trip (the error is at most half of it, well under a
    millisecond on a LAN). SQLite lives on this machine: its clock is ours.
    Called at startup and before every sweep, so a clock that drifts or is
    stepped is caught within ``sweep_interval_seconds``. A difference over
    :data:`CLOCK_WARNING_MS` is logged once each time it changes by as much:
    the service stays correct, but other tools reading this machine's clock
    (logs, S3 signatures) are off by as much."""
    global _clock_offset_ms, _anchor
    if engine.dialect.name != "postgresql":
        _anchor, _clock_offset_ms = None, 0
        return 0
    with engine.connect() as connection:
        before, elapsed_before = time.time_ns(), _elapsed_ns()
        database_ms = int(
            connection.exec_driver_sql(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            ).scalar_one()
        )
        after, elapsed_after = time.time_ns(), _elapsed_ns()
    _anchor = (database_ms, (elapsed_before + elapsed_after) // 2)
    offset = database_ms - (before + after) // 2 // 1_000_000
    if abs(offset) > CLOCK_WARNING_MS and abs(offset - _clock_offset_ms) > CLOCK_WARNING_MS:
        direction = "behind" if offset > 0 else "ahead of"
        log.warning(
            "this machine's clock is %.1f s %s the database's; stored times follow the "
            "database's (run NTP here)",
            abs(offset) / 1000,
            direction,
        )
    _clock_offset_ms = offset
    return offset


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
            # Under READ COMMITTED every statement sees a new snapshot: a
            # history page's total and its rows disagreed when a task was
            # started between them. A read-only REPEATABLE READ transaction
            # is one snapshot and cannot fail to serialize.
            connection.execution_options(
                postgresql_readonly=True, isolation_level="REPEATABLE READ"
            )
        with connection.begin():
            yield connection
