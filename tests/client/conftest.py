"""A real ``upscayl-cloud serve`` for the client tests, and a client with a fresh key.

One server for the whole folder (starting one costs seconds on a shared
2-core machine): 5 MiB parts and a 5 MiB multipart threshold, so a ~6 MiB file
exercises multipart. A second server with a tight rate limit is started only
by the tests that need a 429, and one without workers (``idle``) by those of
tasks that never finish.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import MIB, QUICK_POLL, QUICK_RETRY
from upscayl_cloud.client import Client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("client-srv") / "data",
        workers=1,
        engine_threads=2,
        multipart_part_bytes=5 * MIB,
        multipart_threshold_bytes=5 * MIB,
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``serve --workers 0`` and no worker: every task stays pending, in the
    order it was started (one per module that asks, so none sees another's)."""
    running = Server(tmp_path_factory.mktemp("idle") / "data", workers=0)
    yield running.start()
    running.stop()


@pytest.fixture
def api_key(server: Server) -> str:
    """A fresh key (and account) per test, so rate limits and history are its own."""
    return new_principal(server.ctx, credits=50)[0]


@pytest.fixture
def client(server: Server, api_key: str) -> Iterator[Client]:
    with Client(server.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        yield api
