"""Watching a run's tasks until they finish: ``upscale()``'s polling loop.

Every running task is asked in turn, each poll drawn from the client's
hourly budget (see :mod:`upscayl_cloud.client.polling`). A status call is
idempotent and the task runs on whatever we do, so a server that cannot be
reached for a while (a restart, a network blip) is polled through for
``PollSchedule.outage_seconds`` before a task is given up on: giving up after
the client's few retries marked every file failed although the server went
on to finish (and charge for) them. A task given up on is named, so that its
results can still be fetched with ``client status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from upscayl_cloud.client.errors import (
    ApiError,
    ConnectionFailedError,
    RateLimitedError,
    UpscaylError,
    describe,
)
from upscayl_cloud.client.files import Source
from upscayl_cloud.client.polling import percent
from upscayl_cloud.client.sync import Client

#: Answers of a server that is down or restarting, after the client's own retries.
_OUTAGE_STATUSES = frozenset({500, 502, 503, 504})

ProgressHook = Callable[[str, int, float], None]


@dataclass
class Watched:
    """A started task of the run and what its last poll said."""

    task_id: str
    sources: dict[str, Source]  # upload fileName -> source
    status: Mapping[str, Any] = field(default_factory=dict)
    #: When polls of it began to fail for want of a server (None: the last one worked).
    unreachable_since: float | None = None


def watch(api: Client, tasks: list[Watched], on_progress: ProgressHook) -> None:
    """Poll every task until each is completed or failed (or given up on, with
    its reason in ``status["error"]``)."""
    running = list(tasks)
    for delay in api.poll.delays():
        for task in list(running):
            time.sleep(api.poll_budget.take())
            try:
                task.status = api.get_task_status(task.task_id)
                task.unreachable_since = None
            except RateLimitedError as exc:
                wait = exc.retry_after
                if wait is not None and wait <= api.retry.max_retry_after:
                    time.sleep(wait)  # short, but the client's attempts ran out first
                    continue
                # Longer than the client waits (an hourly limit spent, perhaps by
                # another program): say so instead of sitting silent for an hour.
                # The limit is the key's, so no other task can be asked either.
                _status_unknown(running, exc)
                return
            except UpscaylError as exc:
                if _outage(exc) and not _given_up(api, task):
                    continue  # ask again next round
                task.status = {"status": "failed", "error": _unknown(api, task, exc)}
            on_progress(task.task_id, len(task.sources), percent(task.status))
            if task.status.get("status") in ("completed", "failed"):
                running.remove(task)
        if not running:
            return
        time.sleep(delay)


def _outage(exc: UpscaylError) -> bool:
    if isinstance(exc, ConnectionFailedError):
        return True
    return isinstance(exc, ApiError) and exc.status_code in _OUTAGE_STATUSES


def _given_up(api: Client, task: Watched) -> bool:
    now = time.monotonic()
    if task.unreachable_since is None:
        task.unreachable_since = now
    return now - task.unreachable_since >= api.poll.outage_seconds


def _unknown(api: Client, task: Watched, exc: UpscaylError) -> str:
    check = f"check it with `upscayl-cloud client status {task.task_id}`"
    if task.unreachable_since is None or not _outage(exc):
        return f"status of task {task.task_id} unknown: {describe(exc)}"
    lasted = time.monotonic() - task.unreachable_since
    return (
        f"status of task {task.task_id} unknown: the server could not be asked for "
        f"{lasted:.0f} s ({describe(exc)}); the task may still finish: {check}"
    )


def _status_unknown(running: list[Watched], exc: RateLimitedError) -> None:
    wait = f" for {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
    for task in running:
        task.status = {
            "status": "failed",
            "error": f"status unknown: get-task-status limit reached{wait} (the task runs on); "
            f"check later with `upscayl-cloud client status {task.task_id}`",
        }
