"""Migrations that commit part way (``db/ddl.py``) converge when run again
after an interruption (real PostgreSQL: only it builds concurrently and
commits part way; on SQLite a revision is one transaction)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from support.early_rows import early_uploads
from support.postgres import Postgres
from upscayl_cloud.db import ddl
from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import alembic_config, head_revision, upgrade
from upscayl_cloud.db.tables import metadata


@pytest.fixture
def db(postgres_server: Postgres) -> Iterator[Engine]:
    engine = make_engine(postgres_server.new_database())
    yield engine
    engine.dispose()


def _migrate(engine: Engine, revision: str) -> None:
    """Move a new database to ``revision``, as :func:`upgrade` moves it to head."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _with_uploads(engine: Engine, count: int) -> None:
    """An account and ``count`` uploads as revision 0002 knows them; those
    of even number marked deleted (at their number plus 100)."""
    early_uploads(engine, count, lambda n: 100 + n if n % 2 == 0 else None)


def _invalid_indexes(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE NOT i.indisvalid"
                )
            ).scalars()
        )


def _index_names(engine: Engine) -> dict[str, set[str]]:
    """Each table's indexes other than unique constraints and primary keys."""
    inspector = inspect(engine)
    return {
        table: {ix["name"] for ix in inspector.get_indexes(table) if not ix.get("unique")}
        for table in ("uploads", "task_files", "tasks")
    }


def test_an_index_build_cut_short_is_dropped_and_built_again(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """0004 stopped during its fifth step, a concurrent build (the process
    killed, a timeout, a restart): the steps before it done and committed,
    and the index it was building left INVALID (kept up to date, never read,
    and taken for built by ``IF NOT EXISTS``). The next run drops and builds
    it again, skips what was done, and reaches head with the indexes of the
    metadata, all valid."""
    caplog.set_level(logging.WARNING, logger=ddl.__name__)
    _migrate(db, "0003")
    _with_uploads(db, 4)
    with db.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        for done in (  # steps 1 to 4 of 0004
            "CREATE INDEX ix_uploads_live_account_id ON uploads (account_id, expires_at)"
            " WHERE deleted_at IS NULL",
            "DROP INDEX ix_uploads_expires_at",
            "CREATE INDEX ix_uploads_unpurged ON uploads (deleted_at)"
            " WHERE deleted_at IS NOT NULL AND purged_at IS NULL",
            "DROP INDEX ix_uploads_purged_at",
        ):
            conn.execute(text(done))
        # Step 5, cut short: a build concurrent waits at its end for every
        # transaction with an older snapshot, and is cancelled meanwhile.
        with db.connect() as older:
            older.execution_options(isolation_level="REPEATABLE READ")
            older.execute(text("SELECT 1"))
            conn.execute(text("SET statement_timeout = '500ms'"))
            with pytest.raises(DBAPIError, match="statement timeout"):
                conn.execute(
                    text(
                        "CREATE INDEX CONCURRENTLY ix_task_files_live_expires_at ON task_files"
                        " (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL"
                    )
                )
            older.rollback()
    assert _invalid_indexes(db) == {"ix_task_files_live_expires_at"}

    assert upgrade(db) == ("0003", head_revision())

    assert _invalid_indexes(db) == set()
    expected = {
        table: {ix.name for ix in metadata.tables[table].indexes if not ix.unique}
        for table in ("uploads", "task_files", "tasks")
    }
    assert _index_names(db) == expected
    assert any("ix_task_files_live_expires_at" in r.getMessage() for r in caplog.records)


def test_0003_run_again_after_an_interruption_updates_what_is_left(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0003 commits its column before the backfill, which commits a batch at
    a time: stopped in between, the database is at 0002 with the column and
    some rows done. The next run finds the column there, updates the rows
    left, a primary key range per statement, and reaches head."""
    monkeypatch.setattr(ddl, "BATCH_ROWS", 2)
    _migrate(db, "0002")
    _with_uploads(db, 7)
    with db.begin() as conn:  # the column, and the first batch's row
        conn.execute(text("ALTER TABLE uploads ADD COLUMN purged_at BIGINT"))
        conn.execute(text("UPDATE uploads SET purged_at = deleted_at WHERE file_name = 'u0.png'"))
    backfills: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE uploads SET purged_at"):
            backfills.append(statement)

    event.listen(db, "before_cursor_execute", seen)
    try:
        assert upgrade(db) == ("0002", head_revision())
    finally:
        event.remove(db, "before_cursor_execute", seen)

    assert len(backfills) == 4  # 7 rows, 2 per statement
    with db.connect() as conn:
        purged = dict(conn.execute(text("SELECT file_name, purged_at FROM uploads")).all())
    assert purged == {f"u{n}.png": 100 + n if n % 2 == 0 else None for n in range(7)}
