from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import alembic_config, upgrade
from upscayl_cloud.db.tables import (
    TASK_COUNT_SHARDS,
    accounts,
    metadata,
    store_identity,
    task_counts,
    tasks,
    uploads,
)


def test_migrations_create_every_table_and_are_idempotent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    upgrade(engine)
    names = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= names
    for table in metadata.tables.values():
        columns = {c["name"] for c in inspect(engine).get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def _migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    """Move the schema to one revision, as :func:`upgrade` moves it to head."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _upload(file_name: str, deleted_at: int | None) -> dict[str, object]:
    """An uploads row as revision 0002 knows it (no ``purged_at``)."""
    return {
        "file_name": file_name,
        "account_id": "a",
        "original_file_name": file_name,
        "file_type": "image/png",
        "file_size": 1,
        "storage_key": f"uploads/a/{file_name}",
        "created_at": 1,
        "url_expires_at": 2,
        "expires_at": 3,
        "deleted_at": deleted_at,
    }


def test_0003_counts_originals_deleted_before_it_as_purged(
    tmp_path: Path, database_url: str
) -> None:
    """The code before 0003 deleted the object right after marking the row:
    those rows are purged, and live ones are not."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'x.db'}")
    try:
        _migrate(engine, "0002")
        with engine.begin() as conn:
            conn.execute(insert(accounts).values(id="a", name="a", created_at=1))
            conn.execute(insert(uploads), [_upload("gone.png", 5), _upload("live.png", None)])
        upgrade(engine)
        with engine.connect() as conn:
            purged = dict(conn.execute(select(uploads.c.file_name, uploads.c.purged_at)).all())
        assert purged == {"gone.png": 5, "live.png": None}
        _migrate(engine, "0002", down=True)
        columns = {c["name"] for c in inspect(engine).get_columns("uploads")}
        assert "purged_at" not in columns and "deleted_at" in columns
        upgrade(engine)
    finally:
        engine.dispose()


#: Indexes of revision 0004 (bench/db_queries.py measured why), and those it replaced.
INDEXES_0004 = {
    "uploads": {"ix_uploads_live_account_id", "ix_uploads_unpurged"},
    "task_files": {"ix_task_files_live_expires_at", "ix_task_files_source_key"},
    "tasks": {"ix_tasks_history", "ix_tasks_queue"},
}
REPLACED_BY_0004 = {
    "uploads": {"ix_uploads_expires_at", "ix_uploads_purged_at"},
    "task_files": {"ix_task_files_expires_at"},
    "tasks": {"ix_tasks_account_id_created_at"},
}
PARTIAL_0004 = {
    "ix_uploads_unpurged",
    "ix_uploads_live_account_id",
    "ix_task_files_live_expires_at",
    "ix_tasks_queue",
}


def _indexes(engine: Engine) -> dict[str, dict[str, list[str | None]]]:
    """Each table's indexes (unique constraints aside): name -> columns."""
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    return {
        table: {
            ix["name"]: list(ix["column_names"])
            for ix in inspector.get_indexes(table)
            if ix["name"] and not ix.get("unique")
        }
        for table in metadata.tables
        if table in present
    }


def _partial_names(engine: Engine) -> set[str]:
    """Names of the partial indexes, as the database itself reports them."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return set(
                conn.execute(
                    text(
                        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                        " WHERE i.indpred IS NOT NULL"
                    )
                ).scalars()
            )
        return set(
            conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'")
            ).scalars()
        )


def test_0004_indexes_match_the_metadata_and_go_away_on_downgrade(
    tmp_path: Path, database_url: str
) -> None:
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'x.db'}")
    try:
        upgrade(engine)
        expected = {
            name: {ix.name: [c.name for c in ix.columns] for ix in table.indexes if not ix.unique}
            for name, table in metadata.tables.items()
        }
        assert _indexes(engine) == expected
        assert _partial_names(engine) == PARTIAL_0004
        for table, names in INDEXES_0004.items():
            assert names <= set(expected[table])
            assert not REPLACED_BY_0004[table] & set(expected[table])

        _migrate(engine, "0003", down=True)
        at_0003 = _indexes(engine)
        for table, names in INDEXES_0004.items():
            assert not names & set(at_0003[table]), table
            assert REPLACED_BY_0004[table] <= set(at_0003[table]), table
        assert _partial_names(engine) == set()

        upgrade(engine)  # and up again, as a rollback followed by a redeploy does
        assert _indexes(engine) == expected
    finally:
        engine.dispose()


def _task(task_id: str, status: str) -> dict[str, object]:
    """A tasks row as revision 0004 knows it."""
    return {
        "id": task_id,
        "account_id": "a",
        "status": status,
        "model": "m",
        "scale": 4,
        "save_image_as": "png",
        "enhance_face": False,
        "batch_mode": False,
        "progress": 0,
        "attempts": 1,
        "lease_until": 0,
        "credits_reserved": 1,
        "credits_charged": 0,
        "created_at": 1,
        "updated_at": 1,
    }


def test_0005_counts_the_tasks_finished_before_it(tmp_path: Path, database_url: str) -> None:
    """/metrics reads the finished tasks from task_counts from then on: those
    finished before it are counted once, by the migration."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'x.db'}")
    statuses = ["completed", "completed", "failed", "pending", "processing"]
    try:
        _migrate(engine, "0004")
        with engine.begin() as conn:
            conn.execute(insert(accounts).values(id="a", name="a", created_at=1))
            conn.execute(insert(tasks), [_task(f"t{n}", s) for n, s in enumerate(statuses)])
        upgrade(engine)
        with engine.connect() as conn:
            summed = select(task_counts.c.status, func.sum(task_counts.c.count)).group_by(
                task_counts.c.status
            )
            assert {status: int(n) for status, n in conn.execute(summed)} == {
                "completed": 2,
                "failed": 1,
            }
            shards = conn.execute(select(func.count()).select_from(task_counts)).scalar_one()
            assert shards == 2 * TASK_COUNT_SHARDS
        _migrate(engine, "0004", down=True)
        assert "task_counts" not in inspect(engine).get_table_names()
        upgrade(engine)
    finally:
        engine.dispose()


def test_0007_store_identity_holds_one_row_and_goes_away_on_downgrade(
    tmp_path: Path, database_url: str
) -> None:
    """The pairing's row has one possible key, so processes starting
    together cannot record two ids; a second key is refused outright. Its
    ``paired_at`` starts empty: a row is made before its marker is written."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'x.db'}")
    row = {"store_id": "a" * 32, "location": "here", "created_at": 1, "updated_at": 1}
    try:
        upgrade(engine)
        columns = {c["name"]: c for c in inspect(engine).get_columns("store_identity")}
        assert columns["paired_at"]["nullable"] is True
        with engine.begin() as conn:
            conn.execute(insert(store_identity).values(slot=1, **row))
        for slot in (1, 2):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(insert(store_identity).values(slot=slot, **row))
        _migrate(engine, "0006", down=True)
        assert "store_identity" not in inspect(engine).get_table_names()
        upgrade(engine)
        assert "store_identity" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
