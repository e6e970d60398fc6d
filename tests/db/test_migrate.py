from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import upgrade
from upscayl_cloud.db.tables import metadata


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
