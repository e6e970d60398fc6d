"""Real servers for the end-to-end tests (one per module, shared by its tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.client import ApiClient, make_client
from support.server import Server

#: 5 MiB parts so that the multipart test needs only ~6 MiB of data.
MAIN_ENV = {"multipart_part_bytes": 5 * 1024 * 1024, "engine_threads": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("srv") / "data", workers=1, **MAIN_ENV).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> ApiClient:
    return make_client(server)
