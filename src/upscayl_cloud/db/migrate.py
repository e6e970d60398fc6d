"""Running the Alembic migrations from code, at startup and from the CLI.

The migration scripts ship inside the package, so an installed wheel can
upgrade its own database without an ``alembic.ini`` lying around.

Every ``serve`` and ``worker`` process migrates on start, and several may
start at once (a deploy, a reboot). Alembic itself does not serialise two
upgrades: both would see the old revision and run the same DDL. So the
upgrade runs under a lock held by one process at a time: a PostgreSQL
session advisory lock (released by the server if the process dies), or on
SQLite an ``flock`` on a file beside the database (released by the kernel).
The second process then finds the schema at head and does nothing.

On PostgreSQL a revision that alters a table (``ADD COLUMN``...) needs its
ACCESS EXCLUSIVE lock, which waits for every transaction already using the
table; while it waits, every new query on that table, reads included, queues
behind it. One long reader (a report, a ``pg_dump``) would so stop the whole
service for as long as it runs. So each revision's transaction waits at most
:data:`LOCK_TIMEOUT_SECONDS` for a lock (``lock_timeout``), and the upgrade
is tried again after a pause that lets the queue drain, up to
:data:`LOCK_ATTEMPTS` times, then given up with one line saying what is in
the way (:class:`MigrationLockTimeoutError`). Revisions commit one by one,
so a given-up upgrade leaves the schema at the last revision it finished.
The wait for the advisory lock is not limited: the process waiting there
waits for another's upgrade, which blocks nobody else.
"""

from __future__ import annotations

import fcntl
import logging
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from upscayl_cloud.db.tables import metadata

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Key of the PostgreSQL advisory lock (any constant shared by every process).
ADVISORY_LOCK_KEY = 0x75707363_61796C01  # "upscayl" + 1, fits a signed bigint
#: Pause between two tries of the advisory lock while another process holds it.
ADVISORY_LOCK_POLL_SECONDS = 0.2

#: Longest wait of a revision's transaction for a table lock on PostgreSQL
#: (``lock_timeout``): the longest the service's queries on that table queue
#: behind the migration's request for it.
LOCK_TIMEOUT_SECONDS = 3.0
#: Tries of the upgrade when a revision gives up waiting for a lock.
LOCK_ATTEMPTS = 5
#: Pause before the second try, doubled before each next one (plus up to a
#: quarter at random, so processes do not retry in step), at most
#: :data:`LOCK_RETRY_MAX_SECONDS`.
LOCK_RETRY_SECONDS = 1.0
LOCK_RETRY_MAX_SECONDS = 10.0
#: PostgreSQL's SQLSTATE for a lock not granted in time (``lock_not_available``).
LOCK_NOT_AVAILABLE = "55P03"


class MigrationLockTimeoutError(OperationalError):
    """The upgrade gave up: a revision's lock stayed taken through every try.

    An ``OperationalError``, as SQLite's "database is locked" is: the
    database cannot be migrated right now, and the command line's start-up
    handler (``cli/startup.exit_if_database_failed``) prints its ``orig``'s
    first line, this message, instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, _WaitError(message))
        self.message = message

    def __str__(self) -> str:
        return self.message


class _WaitError(Exception):
    """Stands for the driver's exception in :class:`MigrationLockTimeoutError`."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _postgres_lock(connection: Connection) -> Iterator[None]:
    """The advisory lock, tried every :data:`ADVISORY_LOCK_POLL_SECONDS` with no
    transaction open in between, not awaited in ``pg_advisory_lock``: a
    process blocked there is a transaction with a snapshot, which the
    upgrading process's ``CREATE INDEX CONCURRENTLY`` waits to end (older
    snapshots could miss the index) while it waits for that process's lock,
    a deadlock PostgreSQL broke by failing one of them."""
    waiting = False
    while not connection.execute(
        text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
    ).scalar():
        connection.commit()
        if not waiting:
            log.info("another process is upgrading the database schema: waiting for it")
            waiting = True
        time.sleep(ADVISORY_LOCK_POLL_SECONDS)
    connection.commit()  # a session lock outlives the transaction that took it
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _revision(connection: Connection) -> str | None:
    """The schema's Alembic revision, None for a new database (read from its
    table: ``MigrationContext`` would log a "Context impl" line each time,
    which reads as one more migration run)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade_on(connection: Connection, config: Config) -> tuple[str | None, str | None]:
    before = _revision(connection)
    if before is not None and not _known(config, before):
        # A newer release migrated it (a rolling upgrade, or a rollback):
        # migrations only add or widen, so this release works on it as it
        # is. Alembic would stop the start: "Can't locate revision".
        log.warning(
            "the database schema is at revision %s, newer than this release's %s: "
            "left as it is (upgrade this machine when the rollout reaches it)",
            before,
            head_revision(),
        )
        return before, before
    config.attributes["connection"] = connection
    if connection.dialect.name != "postgresql":
        command.upgrade(config, "head")  # SQLite: busy_timeout bounds its waits
        return before, _revision(connection)
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with _lock_timeout(connection):
                command.upgrade(config, "head")
            break
        except OperationalError as exc:
            if connection.in_transaction():
                connection.rollback()
            if not _lock_not_available(exc):
                raise
            at = _revision(connection)
            waited = _waited_for(config, connection, at, exc)
            if attempt == LOCK_ATTEMPTS:
                raise MigrationLockTimeoutError(
                    f"the schema upgrade gave up after {LOCK_ATTEMPTS} tries: {waited}. The "
                    f"schema is left at revision {at}: end that transaction or let it finish "
                    "(pg_stat_activity shows it, pg_terminate_backend(pid) ends it), then start "
                    "again or run `upscayl-cloud migrate`"
                ) from exc
            pause = min(LOCK_RETRY_SECONDS * 2 ** (attempt - 1), LOCK_RETRY_MAX_SECONDS)
            pause *= 1 + random.random() / 4
            log.warning(
                "%s; trying again in %.1f s (try %d of %d)",
                waited,
                pause,
                attempt + 1,
                LOCK_ATTEMPTS,
            )
            time.sleep(pause)
    return before, _revision(connection)


@contextmanager
def _lock_timeout(connection: Connection) -> Iterator[None]:
    """Every transaction the migration begins on ``connection`` waits at most
    :data:`LOCK_TIMEOUT_SECONDS` for a lock (``SET LOCAL``: it ends with the
    transaction, so the pooled connection and the advisory lock's wait keep
    the server's setting). ``autocommit_block``'s statements run outside any
    transaction and keep it too: a ``CONCURRENTLY`` index build waits for
    older transactions without blocking anyone, and one cut short leaves an
    invalid index to build again."""
    milliseconds = max(1, round(LOCK_TIMEOUT_SECONDS * 1000))

    def on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")

    event.listen(connection, "begin", on_begin)
    try:
        yield
    finally:
        event.remove(connection, "begin", on_begin)


def _lock_not_available(error: DBAPIError) -> bool:
    """Whether ``error`` is PostgreSQL's "canceling statement due to lock timeout"."""
    orig = error.orig
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == LOCK_NOT_AVAILABLE


def _waited_for(config: Config, connection: Connection, at: str | None, error: DBAPIError) -> str:
    """One line for the operator: the revision that waited, the tables of its
    statement, and the other transactions holding locks on them, oldest
    first (most often a long-running reader: a report, a ``pg_dump``)."""
    statement = " ".join(str(error.statement or "").split())
    tables = sorted(
        name
        for name in [*metadata.tables, "alembic_version"]
        if re.search(rf"\b{re.escape(name)}\b", statement, re.IGNORECASE)
    )
    holders = connection.execute(
        text(
            "SELECT DISTINCT a.pid, a.state, a.xact_start,"
            " extract(epoch FROM now() - a.xact_start) AS seconds,"
            " left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) AS query"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.relation::regclass::text = ANY(:tables)"
            " ORDER BY a.xact_start NULLS LAST LIMIT 3"
        ),
        {"tables": tables},
    ).all()
    connection.rollback()
    on = ", ".join(tables) or "a table"
    what = f"the upgrade to revision {_next_revision(config, at)} waited over " + (
        f"{LOCK_TIMEOUT_SECONDS:g} s for a lock on {on} ({statement[:80]})"
    )
    if not holders:
        return f"{what}: a long-running transaction reading or writing {on} was in the way"
    described = "; ".join(
        f"pid {h.pid}"
        + (f", in a transaction for {h.seconds:.0f} s" if h.seconds is not None else "")
        + (f", {h.state}" if h.state else "")
        + (f": {h.query}" if h.query else "")
        for h in holders
    )
    return f"{what}: a long-running transaction reading or writing {on} is in the way ({described})"


def _next_revision(config: Config, at: str | None) -> str:
    """The revision after ``at`` (the first when None): the one that waited."""
    for script in ScriptDirectory.from_config(config).walk_revisions():
        if script.down_revision == at:
            return script.revision
    return "head"


def head_revision() -> str | None:
    """The newest revision this release's migrations reach."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _known(config: Config, revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:  # alembic's "No such revision"
        return False


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the database to the newest schema (idempotent; safe on every start,
    from any number of processes at once). Returns the revisions before and
    after (None before: a new database), for ``migrate`` to say what it did."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection, _postgres_lock(connection):
            return _upgrade_on(connection, config)
    # On SQLite the lock comes before the first connection: switching a new
    # database file to WAL (done on connect) needs the file to itself, and
    # fails at once with "database is locked" while another process does it.
    with _file_lock(engine.url.database), engine.connect() as connection:
        return _upgrade_on(connection, config)
