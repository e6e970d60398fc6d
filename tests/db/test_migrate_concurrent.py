"""Several real processes starting at the same moment migrate once, safely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import MIGRATIONS_DIR
from upscayl_cloud.db.tables import metadata

# Each process imports everything, says so, and upgrades when told to go: all
# of them then race for the same DDL (without the lock, PostgreSQL fails
# with a duplicate pg_type row).
_MIGRATE = (
    "import sys\n"
    "from upscayl_cloud.db.engine import make_engine\n"
    "from upscayl_cloud.db.migrate import upgrade\n"
    "engine = make_engine(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "upgrade(engine)\n"
)
PROCESSES = 4


def _head() -> str:
    return sorted(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))[-1]


def test_simultaneous_starts_migrate_once(tmp_path: Path, database_url: str) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'upscayl.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    outputs = [p.communicate(timeout=60)[0].decode(errors="replace") for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == [_head()]
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from upscayl_cloud.cli import app
    from upscayl_cloud.config import get_settings

    url = f"sqlite:///{tmp_path / 'm.db'}"
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["migrate"], env={"UPSCAYL_DATABASE_URL": url, "UPSCAYL_DATA_DIR": str(tmp_path)}
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
    finally:
        engine.dispose()
