"""Fixtures shared by every service test: settings and a real context on a
temporary data directory (real files), on SQLite and, where a PostgreSQL
server and psycopg are installed, on PostgreSQL too (same tests, same code)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``tests/support`` is importable as ``support`` from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import postgres
from support.context import make_settings, new_principal
from upscayl_cloud.config import Settings
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.keys import Principal


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Postgres]:
    reason = postgres.available()
    if reason is not None:
        pytest.skip(f"PostgreSQL variant skipped: {reason}")
    server = postgres.Postgres().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Empty means the embedded SQLite file inside the data directory."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = build_context(settings)
    yield context
    context.db.dispose()


@pytest.fixture
def principal(ctx: Context) -> Principal:
    return new_principal(ctx)[1]
