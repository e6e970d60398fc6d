"""Tasks that never finish: a server with no worker running keeps them pending.

``upscale()`` and ``client upscale`` used to poll them for ever without a
word. Now a task that shows no progress for a while is told of, and a
timeout ends the wait, naming where the results will be.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, write_image
from upscayl_cloud.cli import app
from upscayl_cloud.client import Client, upscale
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
