"""Tasks that never finish: a server with no worker running keeps them pending.

``upscale()`` and ``client upscale`` used to poll them for ever without a
word. Now a task that shows no progress for a while is told of, and a
timeout ends the wait, naming where the results will be.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, image_bytes, write_image
from upscayl_cloud.cli import app
from upscayl_cloud.client import (
    AsyncClient,
    Client,
    RetryPolicy,
    WaitTimeoutError,
    upscale,
)
from upscayl_cloud.client.watched import Watched

#: A task that shows no progress for a second is told of.
STALL_POLL = replace(QUICK_POLL, stall_seconds=1)


def test_a_timeout_ends_the_wait_and_a_pending_task_is_told_of(
    idle: Server, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    told: list[str] = []

    class Notices:
        def uploading(self, total_bytes: int) -> None: ...
        def uploaded(self, delta: int) -> None: ...
        def processing(self, task_id: str, files: int, percent: float) -> None: ...
        def finished(self, result: object) -> None: ...
        def notice(self, message: str) -> None:
            told.append(message)

    key = new_principal(idle.ctx, credits=5)[0]
    began = time.monotonic()
    with Client(idle.url, key, poll=STALL_POLL, retry=QUICK_RETRY) as api:
        report = upscale([image], model=FAST, client=api, timeout=5, reporter=Notices())
    assert time.monotonic() - began < 15
    [result] = report.results
    assert result.status == "failed" and result.task_id is not None
    reason = result.reason or ""
    assert f"task {result.task_id} still pending after waiting 5 s" in reason, reason
    assert f"`upscayl-cloud client status {result.task_id}`" in reason
    [notice] = report.notices
    assert told == [notice]
    assert f"task {result.task_id} is still pending" in notice
    assert "no worker may be running" in notice


def test_client_upscale_takes_a_timeout_and_tells_of_a_stalled_task(
    idle: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice goes to stderr; the command exits 1 (the file is not done).
    The client's stall threshold is shortened here (5 minutes by default)."""
    image = write_image(tmp_path / "a.png", 16, 16)
    key = new_principal(idle.ctx, credits=5)[0]
    monkeypatch.setattr(
        "upscayl_cloud.cli.client.Client",
        lambda url, key: Client(url, key, poll=STALL_POLL, retry=QUICK_RETRY),
    )
    run = CliRunner(env={"UPSCAYL_URL": idle.url, "UPSCAYL_API_KEY": key, "COLUMNS": "300"})
    result = run.invoke(app, ["client", "upscale", str(image), "-m", FAST, "--timeout", "5"])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 1, result.output
    assert "notice: task" in said and "no worker may be running" in said
    assert "still pending after waiting 5 s" in said and "client status" in said


def test_a_task_has_waited_since_it_was_started_not_since_its_first_poll() -> None:
    """Polls begin once the run's uploads are done: a task started before a
    long upload phase was counted as stalled only from its first poll."""
    task = Watched("t", {})
    started = task.progressed_at
    task.seen({"status": "pending", "progress": 0})
    assert task.progressed_at == started
    task.seen({"status": "processing", "progress": 10})
    assert task.progressed_at > started
    busy = Watched("u", {})
    before = busy.progressed_at
    busy.seen({"status": "processing", "progress": 40})  # progressed while we uploaded
    assert busy.progressed_at > before


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No worker (tasks stay pending), and one get-task-status (and one
    history page) a minute per key: the second is refused with a
    ``Retry-After`` of up to 60 s, which the client waits out (it is under
    ``max_retry_after``)."""
    limits = json.dumps(
        {"get-task-status": "1 per 60 seconds", "get-upscayl-history": "1 per 60 seconds"}
    )
    running = Server(tmp_path_factory.mktemp("throttled") / "data", workers=0, rate_limits=limits)
    yield running.start()
    running.stop()


#: The most a bounded wait below may take: far under the minute (or more)
#: each overrun took, far over what a slow 2-core machine adds to its
#: deadline of 1-2 s.
BOUNDED = 20

#: Two tries: without a deadline, the one retry sleeps out the whole minute.
TWO_TRIES = RetryPolicy(attempts=2, backoff_base=0.05, backoff_cap=0.2)


def _pending_task(server: Server, key: str) -> str:
    with Client(server.url, key) as api:
        return api.start_task(file=("a.png", image_bytes(16, 16)), model=FAST)


def test_wait_timeout_is_not_overrun_by_a_retry_after(throttled: Server) -> None:
    """``wait(timeout=2)`` used to sleep out a 429's ``Retry-After`` (up to
    2 minutes, each try) whatever the deadline. Now the wait ends at it."""
    key = new_principal(throttled.ctx, credits=5)[0]
    task_id = _pending_task(throttled, key)
    with Client(throttled.url, key, poll=QUICK_POLL, retry=TWO_TRIES) as api:
        assert api.get_task_status(task_id)["status"] == "pending"  # the minute's poll
        began = time.monotonic()
        with pytest.raises(WaitTimeoutError) as timed_out:
            api.wait(task_id, timeout=2)
        waited = time.monotonic() - began

    async def wait_async() -> None:
        async with AsyncClient(throttled.url, key, poll=QUICK_POLL, retry=TWO_TRIES) as aapi:
            await aapi.wait(task_id, timeout=2)

    began = time.monotonic()
    with pytest.raises(WaitTimeoutError) as timed_out_async:
        asyncio.run(wait_async())
    waited_async = time.monotonic() - began
    assert timed_out.value.task_id == timed_out_async.value.task_id == task_id
    assert waited < BOUNDED and waited_async < BOUNDED, (waited, waited_async)


def test_wait_timeout_caps_a_request_the_server_never_answers(throttled: Server) -> None:
    """The real server is stopped (SIGSTOP): connections are taken, nothing
    is answered. With a 60 s read timeout, ``wait(timeout=1)`` waited a
    minute; a request sent at the deadline now gets 2 s
    (``FINAL_REQUEST_SECONDS``) at most."""
    key = new_principal(throttled.ctx, credits=5)[0]
    task_id = _pending_task(throttled, key)
    assert throttled.process is not None
    one_try = RetryPolicy(attempts=1)
    os.killpg(throttled.process.pid, signal.SIGSTOP)
    try:
        with Client(throttled.url, key, poll=QUICK_POLL, retry=one_try, timeout=60) as api:
            began = time.monotonic()
            with pytest.raises(WaitTimeoutError):
                api.wait(task_id, timeout=1)
            waited = time.monotonic() - began

        async def wait_async() -> None:
            async with AsyncClient(
                throttled.url, key, poll=QUICK_POLL, retry=one_try, timeout=60
            ) as aapi:
                await aapi.wait(task_id, timeout=1)

        began = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            asyncio.run(wait_async())
        waited_async = time.monotonic() - began
    finally:
        os.killpg(throttled.process.pid, signal.SIGCONT)
    assert 1.5 < waited < BOUNDED and 1.5 < waited_async < BOUNDED, (waited, waited_async)


def test_upscale_timeout_is_not_overrun_by_a_retry_after(throttled: Server, tmp_path: Path) -> None:
    """``upscale(timeout=3)``: the first poll uses the minute's allowance,
    the next is refused for up to 60 s. Each poll of the watch was a full
    retry loop ignoring the deadline (and a refused one slept out its
    ``Retry-After`` once more): minutes past the timeout."""
    image = write_image(tmp_path / "a.png", 16, 16)
    key = new_principal(throttled.ctx, credits=5)[0]
    began = time.monotonic()
    with Client(throttled.url, key, poll=QUICK_POLL, retry=TWO_TRIES) as api:
        report = upscale([image], model=FAST, client=api, timeout=3)
    assert time.monotonic() - began < BOUNDED
    [result] = report.results
    assert result.status == "failed" and result.task_id is not None
    assert f"task {result.task_id} still pending after waiting 3 s" in (result.reason or "")


def test_upscale_timeout_is_not_overrun_by_history_pages(throttled: Server, tmp_path: Path) -> None:
    """Two tasks are watched through history pages: the first page uses the
    minute's allowance, the next is refused for up to 60 s, and its retry
    slept that out whatever the timeout."""
    for seed in range(2):
        write_image(tmp_path / f"{seed}.png", 16, 16, seed=seed)
    key = new_principal(throttled.ctx, credits=5)[0]
    began = time.monotonic()
    with Client(throttled.url, key, poll=QUICK_POLL, retry=TWO_TRIES) as api:
        report = upscale([tmp_path], model=FAST, client=api, timeout=3, batch_size=1)
    assert time.monotonic() - began < BOUNDED
    assert len({r.task_id for r in report.results}) == 2
    for result in report.results:
        assert f"task {result.task_id} still pending after waiting 3 s" in (result.reason or "")
