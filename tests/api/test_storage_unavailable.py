"""An object store that is down or frozen, through the real app: 503 with
Retry-After (the client retries it) and one warning line, and a /readyz that
neither waits for the store nor lets callers pile up probes on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import make_settings, new_principal
from support.images import png_bytes
from tests.storage.unreachable import FrozenStore, closed_endpoint
from upscayl_cloud.api import readiness as readiness_module


@contextmanager
def _s3_client(tmp_path: Path, endpoint: str, **overrides: object) -> Iterator[TestClient]:
    values: dict[str, object] = {
        "storage_backend": "s3",
        "s3_bucket": "bucket",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": "key",
        "s3_secret_access_key": "secret",
        "s3_connect_timeout_seconds": 1,
        "s3_read_timeout_seconds": 1,
        "s3_max_attempts": 1,
    }
    settings = make_settings(tmp_path / "data", **{**values, **overrides})
    with client_for(settings) as client:
        yield client


@pytest.fixture
def down(tmp_path: Path) -> Iterator[TestClient]:
    with _s3_client(tmp_path, closed_endpoint()) as client:
        yield client


def _assert_unavailable(response: object, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.json()["error"] == "SERVICE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert int(response.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
    warnings = [r for r in caplog.records if r.name == "upscayl_cloud.api.errors"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert warnings[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_multipart_upload_url_on_a_down_store_is_503(
    down: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_principal(down.app.state.ctx)[0]
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 10, "multipart": True}
    with caplog.at_level(logging.WARNING):
        response = down.post("/get-upload-url", json=body, headers={"X-API-Key": key})
    _assert_unavailable(response, caplog)


def test_start_task_with_a_file_on_a_down_store_is_503(
    down: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_principal(down.app.state.ctx)[0]
    with caplog.at_level(logging.WARNING):
        response = down.post(
            "/start-task",
            files=[("file", ("a.png", png_bytes(), "image/png"))],
            headers={"X-API-Key": key},
        )
    _assert_unavailable(response, caplog)


class _Clock:
    """Stands in for the ``time`` module in api/readiness.py: a monotonic
    clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


def _probe_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "readiness-probe"}


def test_readyz_on_a_frozen_store_shares_one_bounded_probe(tmp_path: Path) -> None:
    """20 concurrent probes: one reaches the store, all answer 503 within the
    readiness timeout, and /healthz answers meanwhile.

    The store's read timeout is long, and the test ends the probe itself (by
    dropping its connection) once every caller has answered: "the callers did
    not wait for the probe" is then a fact to check, not an elapsed time that
    a busy machine could stretch past the probe's own end."""
    earlier = _probe_threads()
    with (
        FrozenStore() as frozen,
        _s3_client(
            tmp_path,
            frozen.url,
            readiness_timeout_seconds=0.5,
            readiness_cache_seconds=30,
            s3_read_timeout_seconds=60,
        ) as client,
    ):
        answers: list[int] = []

        def probe() -> None:
            answers.append(client.get("/readyz").status_code)

        threads = [threading.Thread(target=probe, daemon=True) for _ in range(20)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        assert client.get("/healthz").status_code == 200
        for thread in threads:
            thread.join(timeout=30)
        assert answers == [503] * 20
        running = _probe_threads() - earlier
        assert len(running) == 1  # one probe, and it is still waiting on the store
        assert frozen.connections == 1
        frozen.drop()  # the probe fails now, and its answer is cached (30 s)
        (prober,) = running
        prober.join(timeout=30)
        assert not prober.is_alive()
        body = client.get("/readyz").json()
        assert body == {"error": "NOT_READY", "message": "Not ready: storage"}
        assert frozen.connections == 1  # no new probe


def test_readyz_survives_a_hung_probe_started_on_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A probe started on an event loop that closed since (a client without
    ``with`` runs each request on a loop of its own) and that hangs: callers
    on another loop still answer 503 within the timeout, not 500; a probe
    older than 3 x the timeout is abandoned (one warning) and a fresh one
    answers; the hung one returning at last disturbs nothing."""
    timeout = 0.5
    # The probes' ages are read on a clock of the test's own, moved on by
    # hand: on real time, a busy machine that took 3 x the timeout to get the
    # second caller going saw the hung probe abandoned too early. Callers
    # still wait on real time (the event loop's clock).
    clock = _Clock()
    monkeypatch.setattr(readiness_module, "time", clock)
    settings = make_settings(
        tmp_path / "data", readiness_timeout_seconds=timeout, readiness_cache_seconds=0
    )
    with client_for(settings) as client:
        store = client.app.state.ctx.storage
        real_write = store.write_stream
        release = threading.Event()
        probes: list[str] = []

        def first_probe_hangs(key: str, chunks: Iterator[bytes], max_bytes: int) -> int:
            probes.append(key)
            if len(probes) == 1:
                release.wait(60)
            return real_write(key, chunks, max_bytes)

        monkeypatch.setattr(store, "write_stream", first_probe_hangs)
        elsewhere = TestClient(client.app, raise_server_exceptions=False)

        def timed(target: TestClient) -> tuple[int, float]:
            started = time.monotonic()
            status = target.get("/readyz").status_code
            return status, time.monotonic() - started

        with caplog.at_level(logging.WARNING):
            status, took = timed(elsewhere)  # starts the probe; its loop then closes
            assert (status, len(probes)) == (503, 1)
            status, took = timed(client)  # another loop, the same hung probe
            # Answered on the timeout: waiting for the probe would take until
            # its release (60 s), and answer 200.
            assert status == 503 and took < 20
            assert len(probes) == 1
            clock.now += 3 * timeout + 0.1  # the hung probe is now stale
            assert client.get("/readyz").status_code == 200
            assert len(probes) == 2
            assert elsewhere.get("/readyz").status_code == 200
            release.set()
            deadline = time.monotonic() + 30
            while len([t for t in threading.enumerate() if t.name == "readiness-probe"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert client.get("/readyz").status_code == 200
            assert elsewhere.get("/readyz").status_code == 200
        abandoned = [r for r in caplog.records if "abandoning" in r.getMessage()]
        assert len(abandoned) == 1
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
