"""What a schema upgrade on PostgreSQL does to the service's queries while it
waits for a table lock (real PostgreSQL, real concurrent transactions).

A transaction already reading a table (a report, a ``pg_dump``) is modelled
by a plain ``SELECT`` in a transaction left open; the service's traffic by a
thread reading one upload by primary key over and over, as status calls and
start-task do, keeping the longest any read took. Lock waits are shortened
(``quick_lock_waits``) so that each test takes seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, inspect, text

from support.early_rows import early_uploads
from support.postgres import Postgres, until_a_lock_is_awaited
from upscayl_cloud.db import migrate
from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import alembic_config, head_revision, upgrade

#: How long the reader keeps its transaction open in the tests where it ends:
#: several of the shortened lock timeouts, and far above the longest read the
#: tests allow the service.
HOLD_SECONDS = 2.5
#: The longest a read of uploads may wait while the migration waits for the
#: reader: the shortened lock timeout (0.3 s) plus room for a loaded machine.
LONGEST_READ_SECONDS = 1.2
#: The server ends the reader itself after this long idle, so that a
#: migration that would wait for it forever (as before lock_timeout) fails
#: the test instead of hanging it.
READER_SAFETY_SECONDS = 20


@pytest.fixture
def db(postgres_server: Postgres) -> Iterator[Engine]:
    engine = make_engine(postgres_server.new_database())
    yield engine
    engine.dispose()


@pytest.fixture
def quick_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock waits of tenths of a second instead of seconds, with tries
    enough to outlast ``HOLD_SECONDS``."""
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(migrate, "LOCK_RETRY_SECONDS", 0.1)
    monkeypatch.setattr(migrate, "LOCK_RETRY_MAX_SECONDS", 0.3)
    monkeypatch.setattr(migrate, "LOCK_ATTEMPTS", 20)


def _migrate(engine: Engine, revision: str) -> None:
    """Move a new database to ``revision``, as :func:`upgrade` moves it to head."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _with_uploads(engine: Engine, revision: str) -> None:
    """The schema at ``revision`` (0002 or 0003), with an account and three
    uploads, one of them marked deleted."""
    _migrate(engine, revision)
    early_uploads(engine, 3, lambda n: 5 if n == 0 else None)


def _open_reader(conn: Connection) -> int:
    """Make ``conn`` a transaction that has read uploads and stays open;
    returns its backend's pid."""
    conn.execute(text(f"SET idle_in_transaction_session_timeout = '{READER_SAFETY_SECONDS}s'"))
    conn.commit()
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    conn.execute(text("SELECT count(*) FROM uploads")).scalar_one()
    return int(pid)


class Prober(threading.Thread):
    """Reads one upload by primary key every 20 ms, each read a transaction of
    its own, and keeps the longest one took."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.longest = 0.0
        self.reads = 0
        self.errors: list[BaseException] = []
        self._done = threading.Event()

    def run(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SET statement_timeout = '60s'"))
                conn.commit()
                while not self._done.is_set():
                    start = time.monotonic()
                    conn.execute(text("SELECT file_name FROM uploads WHERE file_name = 'u1.png'"))
                    conn.commit()
                    self.longest = max(self.longest, time.monotonic() - start)
                    self.reads += 1
                    time.sleep(0.02)
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)

    def finish(self) -> float:
        """Stop, and return the longest read (seconds)."""
        self._done.set()
        self.join(timeout=90)
        assert not self.errors, self.errors
        return self.longest


def _revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def test_reads_go_on_while_the_index_revision_waits_for_a_reader(
    db: Engine, quick_lock_waits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """0004's index changes wait for a transaction reading uploads (a
    concurrent drop waits for every transaction using the table) without
    stopping anyone's reads of it meanwhile. In one transaction, its first
    DROP INDEX queued for the table's ACCESS EXCLUSIVE lock behind the
    reader, and every read queued behind it until the reader ended. The
    concurrent steps wait without the lock timeout: cut short, each would
    be done again from the start."""
    caplog.set_level(logging.INFO, logger=migrate.__name__)
    _with_uploads(db, "0003")
    prober = Prober(db)
    with db.connect() as reader, ThreadPoolExecutor(1) as pool:
        _open_reader(reader)
        prober.start()
        upgrading = pool.submit(upgrade, db)
        until_a_lock_is_awaited(db, "the upgrade")
        time.sleep(HOLD_SECONDS)
        assert not upgrading.done(), "the upgrade did not wait for the reader: nothing measured"
        reader.rollback()
        assert upgrading.result(timeout=120) == ("0003", head_revision())
    longest = prober.finish()
    assert longest < LONGEST_READ_SECONDS, f"a read of uploads waited {longest:.2f} s"
    assert prober.reads > 10, "the prober hardly read: the measure means nothing"
    assert not [r for r in caplog.records if "trying again" in r.getMessage()]


def test_an_alter_gives_way_to_a_reader_and_goes_on_once_it_ends(
    db: Engine, quick_lock_waits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """0003's ADD COLUMN needs uploads' ACCESS EXCLUSIVE lock, which a reader
    holds off: the migration gives up its place in the queue after the lock
    timeout (reads queue behind it that long at most), says who is in the
    way, tries again, and gets through once the reader has ended."""
    caplog.set_level(logging.INFO, logger=migrate.__name__)
    _with_uploads(db, "0002")
    prober = Prober(db)
    with db.connect() as reader, ThreadPoolExecutor(1) as pool:
        pid = _open_reader(reader)
        prober.start()
        upgrading = pool.submit(upgrade, db)
        # Held until the upgrade has given way twice (not for a fixed time,
        # which a slow machine could fill with fewer tries).
        deadline = time.monotonic() + 60
        while _retries(caplog) < 2 and not upgrading.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not upgrading.done(), "the upgrade did not wait for the reader: nothing measured"
        reader.rollback()
        assert upgrading.result(timeout=120) == ("0002", head_revision())
    longest = prober.finish()
    assert longest < LONGEST_READ_SECONDS, f"a read of uploads waited {longest:.2f} s"
    assert prober.reads > 10, "the prober hardly read: the measure means nothing"
    retries = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) >= 2, retries
    for message in retries:
        assert "revision 0003" in message and "lock on uploads" in message, message
        assert f"pid {pid}" in message and "in the way" in message, message
    with db.connect() as conn:
        purged = dict(conn.execute(text("SELECT file_name, purged_at FROM uploads")).all())
    assert purged == {"u0.png": 5, "u1.png": None, "u2.png": None}


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("trying again" in r.getMessage() for r in caplog.records)


def test_an_upgrade_that_never_gets_its_lock_gives_up_in_one_line(
    db: Engine,
    quick_lock_waits: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that outlasts every try: ``migrate`` exits 1 with one line
    naming the table, the transaction in the way and what to do, and the
    schema is at the last revision that finished (0002, untouched: the
    column was never added)."""
    from typer.testing import CliRunner

    from upscayl_cloud.cli import app
    from upscayl_cloud.config import get_settings

    caplog.set_level(logging.INFO, logger=migrate.__name__)
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(migrate, "LOCK_ATTEMPTS", 3)
    _with_uploads(db, "0002")
    url = db.url.render_as_string(hide_password=False)
    with db.connect() as reader:
        pid = _open_reader(reader)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(
                app,
                ["migrate"],
                env={"UPSCAYL_DATABASE_URL": url, "UPSCAYL_DATA_DIR": str(tmp_path)},
            )
        finally:
            get_settings.cache_clear()
        reader.rollback()
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Cannot use the database postgresql"), line
    for said in ("gave up after 3 tries", "lock on uploads", f"pid {pid}", "in the way"):
        assert said in line, (said, line)
    assert "left at revision 0002" in line and "upscayl-cloud migrate" in line, line
    retries = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) == 2
    assert _revision(db) == "0002"
    assert "purged_at" not in {c["name"] for c in inspect(db).get_columns("uploads")}
    assert upgrade(db) == ("0002", head_revision())  # and once the reader is gone, it goes on


def test_waiting_for_another_process_s_upgrade_has_no_timeout_and_no_deadlock(
    db: Engine, quick_lock_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that finds the advisory lock taken waits, for longer than
    every lock timeout together, and outside any transaction: blocked in
    ``pg_advisory_lock``, it was a transaction that the holder's ``CREATE
    INDEX CONCURRENTLY`` waited to end while it waited for the holder, a
    deadlock (PostgreSQL failed one of the two after a second)."""
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT_SECONDS", 0.1)
    monkeypatch.setattr(migrate, "LOCK_ATTEMPTS", 2)
    _with_uploads(db, "0003")
    with db.connect() as holder, ThreadPoolExecutor(1) as pool:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": migrate.ADVISORY_LOCK_KEY})
        holder.commit()
        upgrading = pool.submit(upgrade, db)
        time.sleep(0.5)  # the waiter's first try has failed: it is waiting now
        # What the holder's own upgrade does: build an index concurrently.
        holder.execution_options(isolation_level="AUTOCOMMIT")
        holder.execute(text("CREATE INDEX CONCURRENTLY ix_probe ON accounts (name)"))
        holder.execute(text("DROP INDEX CONCURRENTLY ix_probe"))
        time.sleep(1.0)  # longer than both tries of a revision's lock and the pause between

        assert not upgrading.done()
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.ADVISORY_LOCK_KEY})
        assert upgrading.result(timeout=120) == ("0003", head_revision())
