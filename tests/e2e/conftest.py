"""Real servers for the end-to-end tests (one per module and stack, shared by
the module's tests).

Every test that uses ``server`` (or ``client``) runs on both stacks:

* ``embedded``: SQLite + local folder store + in-memory rate limits;
* ``scaleout``: PostgreSQL + SeaweedFS (S3, a fresh bucket per server) + Redis,
  each a throwaway server on loopback; skipped (with the reason) only where
  one of their binaries is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.client import ApiClient, make_client
from support.server import Server
from support.stacks import on_s3, stack_env

#: 5 MiB parts so that the multipart test needs only ~6 MiB of data.
MAIN_ENV = {"multipart_part_bytes": 5 * 1024 * 1024, "engine_threads": 2}
STACKS = ["embedded", "scaleout"]


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
    if on_s3(server):
        pytest.skip("checks the local store's own signed-link answers")
