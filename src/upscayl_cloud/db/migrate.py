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
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Key of the PostgreSQL advisory lock (any constant shared by every process).
ADVISORY_LOCK_KEY = 0x75707363_61796C01  # "upscayl" + 1, fits a signed bigint


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _postgres_lock(connection: Connection) -> Iterator[None]:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
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
    command.upgrade(config, "head")
    return before, _revision(connection)


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
