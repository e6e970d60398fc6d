"""The rate limits against a real Redis that refuses or goes away: one with
a password (``--requirepass``), a read-only replica, one stopped and started
again, and a Sentinel. A wrong password or a replica turned the limits off
for good, with a warning per request and nothing at start."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from support.app import client_for
from support.context import make_settings, new_principal
from support.redisproc import redis_process
from support.server import free_port
from upscayl_cloud.api.ratelimit import RateLimits, build_storage, check_counter_storage

redis = pytest.importorskip("redis", reason="the redis package is not installed")

PASSWORD = f"pw-{secrets.token_hex(8)}"
WRONG = f"not-{secrets.token_hex(8)}"
LOGGER = "upscayl_cloud.api.ratelimit"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a redis-server that needs ``PASSWORD``."""
    with redis_process(tmp_path_factory.mktemp("locked"), "--requirepass", PASSWORD) as port:
        yield port


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[int]:
    """The port of a read-only replica of the session's Redis."""
    primary = str(urlsplit(redis_url).port)
    folder = tmp_path_factory.mktemp("replica")
    with redis_process(folder, "--replicaof", "127.0.0.1", primary) as port:
        yield port


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_a_wrong_or_missing_password_stops_the_start(tmp_path: Path, locked: int) -> None:
    """WRONGPASS, and NOAUTH ("HELLO must be called with the client already
    authenticated"): fatal, in a line that never has the password."""
    for uri in (f"redis://:{WRONG}@127.0.0.1:{locked}", f"redis://127.0.0.1:{locked}"):
        problem = check_counter_storage(make_settings(tmp_path, rate_limit_storage_uri=uri))
        assert problem is not None and problem.fatal, uri
        assert problem.message.startswith(
            f"Cannot start: the rate-limit storage redis://127.0.0.1:{locked} refused its "
            "credentials (a wrong or missing password in the URI): AuthenticationError: "
        ), problem.message
        assert WRONG not in problem.message
    right = make_settings(
        tmp_path, rate_limit_storage_uri=f"redis://:{PASSWORD}@127.0.0.1:{locked}"
    )
    assert check_counter_storage(right) is None
    off = make_settings(
        tmp_path,
        rate_limit_storage_uri=f"redis://:{WRONG}@127.0.0.1:{locked}",
        rate_limits_enabled=False,
    )
    assert check_counter_storage(off) is None  # nothing is counted: nothing to check


def test_a_read_only_replica_stops_the_start(tmp_path: Path, replica: int) -> None:
    """A ``redis://`` naming a replica answers PING, and refuses every count."""
    settings = make_settings(tmp_path, rate_limit_storage_uri=f"redis://127.0.0.1:{replica}")
    problem = check_counter_storage(settings)
    assert problem is not None and problem.fatal
    assert f"redis://127.0.0.1:{replica} is a read-only replica" in problem.message
    assert "ReadOnlyError" in problem.message


def test_a_storage_out_of_reach_is_warned_of_and_the_start_goes_on(tmp_path: Path) -> None:
    """Redis is no start dependency: its outages are let through anyway."""
    port = free_port()  # nothing listens there
    settings = make_settings(tmp_path, rate_limit_storage_uri=f"redis://127.0.0.1:{port}")
    problem = check_counter_storage(settings)
    assert problem is not None and not problem.fatal
    assert problem.message.startswith(
        f"the rate-limit storage redis://127.0.0.1:{port} cannot be reached (ConnectionError: "
    )
    assert problem.message.endswith(
        "starting anyway; requests are let through without limits until it answers"
    )


def test_a_refusing_storage_lets_requests_through_with_one_error_and_readyz_says_so(
    tmp_path: Path, locked: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The API keeps serving past its limits (2 a minute here), logs one
    error for the run, not one per request, and ``/readyz`` stays ready
    while it names the problem in ``rateLimits``."""
    settings = make_settings(
        tmp_path,
        rate_limit_storage_uri=f"redis://:{WRONG}@127.0.0.1:{locked}",
        rate_limits={"get-upscayl-history": "2/minute"},
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        answers = [
            client.post("/get-upscayl-history", json={}, headers={"X-API-Key": key})
            for _ in range(5)
        ]
        ready = client.get("/readyz")
    assert [r.status_code for r in answers] == [200] * 5
    assert all("X-RateLimit-Limit" not in r.headers for r in answers)
    assert ready.status_code == 200 and ready.json()["rateLimits"] == "refused"
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0][0] == logging.ERROR, lines
    assert lines[0][1].startswith("rate-limit storage refuses to count (AuthenticationError: ")
    assert WRONG not in caplog.text


def test_a_refusal_is_told_again_once_a_minute(
    tmp_path: Path, locked: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The reminder follows the clock given (a stand-in: no test waits a minute)."""
    now = [0.0]
    settings = make_settings(tmp_path, rate_limit_storage_uri=f"redis://127.0.0.1:{locked}")
    limits = RateLimits(settings, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for at in [0.0] * 10 + [59.0, 60.0, 61.0]:
        now[0] = at
        assert limits.check("start-task", "k") == ({}, None)
    lines = _lines(caplog)
    assert [level for level, _ in lines] == [logging.ERROR, logging.ERROR]
    assert lines[1][1].startswith(
        "rate-limit storage still refuses to count after 60 s (12 requests not counted): "
        "AuthenticationError: HELLO must be called with the client already authenticated"
    ), lines[1][1]
    assert limits.status == "refused"


def test_an_outage_is_one_warning_and_its_end_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis stopped, started again with a password the URI lacks, then
    without: one warning for the outage, one error when it refuses, one
    line when counting works again; every request meanwhile passes."""
    port = free_port()
    settings = make_settings(tmp_path, rate_limit_storage_uri=f"redis://127.0.0.1:{port}")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with redis_process(tmp_path / "r1", port=port):
        limits = RateLimits(settings)
        assert limits.check("start-task", "k")[0]["X-RateLimit-Remaining"] == "49"
    for _ in range(3):
        assert limits.check("start-task", "k") == ({}, None)
    assert limits.status == "unreachable"
    with redis_process(tmp_path / "r2", "--requirepass", PASSWORD, port=port):
        for _ in range(2):
            assert limits.check("start-task", "k") == ({}, None)
        assert limits.status == "refused"
    with redis_process(tmp_path / "r3", port=port):
        assert limits.check("start-task", "k")[0]["X-RateLimit-Remaining"] == "49"
        assert limits.check("start-task", "k")[0]["X-RateLimit-Remaining"] == "48"
    assert limits.status == "counting"
    lines = _lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.ERROR, logging.WARNING]
    assert lines[0][1].startswith("rate-limit storage unreachable (ConnectionError: ")
    assert lines[1][1].startswith("rate-limit storage refuses to count (AuthenticationError: ")
    assert lines[2][1].startswith("rate-limit storage counts again after ")
    assert lines[2][1].endswith(" s (2 requests not counted)")


def test_a_sentinel_uri_keeps_its_query_options(tmp_path: Path) -> None:
    """``limits`` dropped a ``redis+sentinel://`` URI's query, so the short
    timeouts the deployment guide recommends were never applied. Shown with
    ``client_name``, which the primary lists; a timeout's effect could only
    be shown by timing, so it is read off the Sentinel's own client."""
    with (
        redis_process(tmp_path / "primary") as primary,
        redis_process(tmp_path / "sentinel", sentinel_of=primary) as sentinel,
    ):
        uri = (
            f"redis+sentinel://127.0.0.1:{sentinel}/mymaster"
            "?client_name=upscayl-counters&socket_timeout=4"
        )
        settings = make_settings(tmp_path, rate_limit_storage_uri=uri)
        assert check_counter_storage(settings) is None
        limits = RateLimits(settings)  # kept: its connections close with it
        headers, refusal = limits.check("start-task", "k")
        assert refusal is None and headers["X-RateLimit-Limit"] == "50"
        names = [c.get("name") for c in redis.Redis(port=primary).client_list()]
        assert "upscayl-counters" in names, names
        (asked,) = build_storage(uri).sentinel.sentinels  # type: ignore[attr-defined]
        assert asked.connection_pool.connection_kwargs["socket_timeout"] == 4.0
