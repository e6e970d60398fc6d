"""A pool's claims through a database outage: one warning, a reminder a
minute, one line on recovery, and polls that back off. The outage in the
last test is real (a PostgreSQL URL on a loopback port nobody listens on:
every connection is refused); the others feed the class a clock."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import replace

import pytest

from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.queue.outage import OUTAGE_MAX_POLL_SECONDS, ClaimOutage
from upscayl_cloud.services.context import Context
from upscayl_cloud.worker import WorkerPool

REFUSED = ConnectionRefusedError("connection refused\nDETAIL: more lines")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "upscayl_cloud.queue.outage"]


def test_an_outage_is_told_once_reminded_each_minute_and_ended_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = _Clock()
    outage = ClaimOutage(clock)
    outage.recovered()  # no outage: nothing to say
    for second in range(0, 130):
        clock.now = 1000.0 + second
        for _ in range(4):  # four threads polling
            outage.failed(REFUSED, 0.5)
    clock.now = 1130.0
    outage.recovered()
    outage.recovered()
    lines = _lines(caplog)
    assert len(lines) == 4, lines
    assert lines[0].startswith("claims failed: the database cannot be reached (connection refused)")
    assert lines[1].startswith("the database is still unreachable after 60 s (241 failed claims)")
    assert lines[2].startswith("the database is still unreachable after 120 s (481 failed claims)")
    assert lines[3] == "the database is reachable again after 130 s (520 failed claims)"


def test_polls_back_off_with_the_outage_and_start_over_after_it() -> None:
    clock = _Clock()
    outage = ClaimOutage(clock)
    assert outage.failed(REFUSED, 0.5) == 0.5  # a blip costs nothing
    clock.now += 20
    assert outage.failed(REFUSED, 0.5) == 2.0  # a tenth of the outage
    clock.now += 600
    assert outage.failed(REFUSED, 0.5) == OUTAGE_MAX_POLL_SECONDS
    outage.recovered()
    assert outage.failed(REFUSED, 0.5) == 0.5


def test_a_pool_facing_a_refused_database_logs_one_line(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """Two threads polling every 0.05 s for 1.5 s used to log 60 lines."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    dead = make_engine(f"postgresql+psycopg://u:p@127.0.0.1:{closed}/none")
    settings = ctx.settings.model_copy(update={"poll_interval_seconds": 0.05})
    pool = WorkerPool(replace(ctx, db=dead, settings=settings), 2)
    caplog.set_level(logging.INFO)
    pool.start()
    try:
        time.sleep(1.5)
        assert pool.alive()
    finally:
        pool.stop()
        dead.dispose()
    lines = _lines(caplog)
    assert len(lines) == 1 and "cannot be reached" in lines[0], lines
    assert not [r for r in caplog.records if "claim failed" in r.getMessage()]
