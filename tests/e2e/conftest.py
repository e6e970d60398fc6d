"""Real servers for the end-to-end tests (one per module and stack, shared by
the module's tests).

Every test that uses ``server`` (or ``client``) runs on both stacks:

* ``embedded``: SQLite + local folder store + in-memory rate limits;
* ``scaleout``: PostgreSQL + SeaweedFS (S3, a fresh bucket per server) + Redis,
  each a throwaway server on loopback; skipped (with the reason) only where
  one of their binaries is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from support.client import ApiClient, make_client
from support.server import Server

#: 5 MiB parts so that the multipart test needs only ~6 MiB of data.
MAIN_ENV = {"multipart_part_bytes": 5 * 1024 * 1024, "engine_threads": 2}
STACKS = ["embedded", "scaleout"]


def stack_env(request: pytest.FixtureRequest, stack: str) -> dict[str, object]:
    """Settings that put a server on ``stack`` (empty for the embedded one)."""
    if stack == "embedded":
        return {}
    database_url = request.getfixturevalue("postgres_server").new_database()
    s3 = request.getfixturevalue("seaweedfs")
    redis_url = request.getfixturevalue("redis_url")
    return {
        "database_url": database_url,
        "rate_limit_storage_uri": redis_url,
        "storage_backend": "s3",
        **{k.removeprefix("UPSCAYL_").lower(): v for k, v in s3.items()},
        "s3_bucket": f"e2e-{uuid.uuid4().hex[:12]}",
        "s3_create_bucket": "true",
    }


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, stack: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {**MAIN_ENV, **stack_env(request, stack)}
    running = Server(tmp_path_factory.mktemp("srv") / "data", workers=1, **env).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> ApiClient:
    return make_client(server)


@pytest.fixture
def local_store(server: Server) -> None:
    """For tests of the local store's own link answers (the S3 store's checks
    are the contract suite's, tests/storage)."""
    if server.env.get("UPSCAYL_STORAGE_BACKEND") == "s3":
        pytest.skip("checks the local store's own signed-link answers")
