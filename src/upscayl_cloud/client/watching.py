"""Watching a run's tasks until they finish: ``upscale()``'s polling loop.

Each round, a run of several tasks reads the history pages first (one call
for up to 100 tasks, see :mod:`upscayl_cloud.client.sweep`); every running
task the history did not show is then asked in turn, each poll drawn from the
client's hourly budget (see :mod:`upscayl_cloud.client.polling`). A status call is
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

from upscayl_cloud.client._core import FINISHED
from upscayl_cloud.client.errors import RateLimitedError, UpscaylError, describe, is_outage
from upscayl_cloud.client.files import Source
from upscayl_cloud.client.polling import percent
from upscayl_cloud.client.sweep import HistorySweep
from upscayl_cloud.client.sync import Client

ProgressHook = Callable[[str, int, float], None]


@dataclass
class Watched:
    """A started task of the run and what its last poll said."""

    task_id: str
    sources: dict[str, Source]  # upload fileName -> source
    status: Mapping[str, Any] = field(default_factory=dict)
    #: When polls of it began to fail for want of a server, or to be refused
    #: with short Retry-Afters (None: the last one worked).
    unreachable_since: float | None = None
    #: The task's ``createdAt`` (Unix ms), once a status has told it.
    created_at: int | None = None

    def seen(self, status: Mapping[str, Any]) -> None:
        """Take a status the server answered for this task."""
        self.status, self.unreachable_since = status, None
        created = status.get("createdAt")
        if isinstance(created, int) and not isinstance(created, bool):
            self.created_at = created


def watch(api: Client, tasks: list[Watched], on_progress: ProgressHook) -> None:
    """Poll every task until each is completed or failed (or given up on, with
    its reason in ``status["error"]``)."""
    running = list(tasks)
    # One task is asked about directly: no history page is cheaper than that.
    sweep = HistorySweep(api) if len(tasks) > 1 else None
    for delay in api.poll.delays():
        shown = sweep.statuses(*_sweep_arguments(running, tasks)) if sweep else {}
        for task in list(running):
            if task.task_id in shown:
                task.seen(shown[task.task_id])
                _progress(task, running, on_progress)
                continue
            time.sleep(api.poll_budget.take())
            try:
                task.seen(api.get_task_status(task.task_id))
            except RateLimitedError as exc:
                wait = exc.retry_after
                short = wait is not None and wait <= api.retry.max_retry_after
                if short and not _given_up(api, task):
                    # Short, but the client's attempts ran out first. Refused
                    # like this for longer than an outage is waited out, the
                    # limit is reported like a long one.
                    time.sleep(wait or 0)
                    continue
                # Longer than the client waits (an hourly limit spent, perhaps by
                # another program): say so instead of sitting silent for an hour.
                # The limit is the key's, so no other task can be asked either.
                if short and task.unreachable_since is not None:
                    lasted = time.monotonic() - task.unreachable_since
                    _status_unknown(running, f"refused (429) for {lasted:.0f} s")
                else:
                    wait_text = f" for {wait:.0f} s" if wait is not None else ""
                    _status_unknown(running, f"limit reached{wait_text}")
                return
            except UpscaylError as exc:
                if is_outage(exc) and not _given_up(api, task):
                    continue  # ask again next round
                task.status = {"status": "failed", "error": _unknown(api, task, exc)}
            _progress(task, running, on_progress)
        if not running:
            return
        time.sleep(delay)


def _sweep_arguments(
    running: list[Watched], tasks: list[Watched]
) -> tuple[dict[str, int | None], list[int]]:
    started = [task.created_at for task in tasks if task.created_at is not None]
    return {task.task_id: task.created_at for task in running}, started


def _progress(task: Watched, running: list[Watched], on_progress: ProgressHook) -> None:
    on_progress(task.task_id, len(task.sources), percent(task.status))
    if task.status.get("status") in FINISHED:
        running.remove(task)


def _given_up(api: Client, task: Watched) -> bool:
    now = time.monotonic()
    if task.unreachable_since is None:
        task.unreachable_since = now
    return now - task.unreachable_since >= api.poll.outage_seconds


def _unknown(api: Client, task: Watched, exc: UpscaylError) -> str:
    check = f"check it with `upscayl-cloud client status {task.task_id}`"
    if task.unreachable_since is None or not is_outage(exc):
        return f"status of task {task.task_id} unknown: {describe(exc)}"
    lasted = time.monotonic() - task.unreachable_since
    return (
        f"status of task {task.task_id} unknown: the server could not be asked for "
        f"{lasted:.0f} s ({describe(exc)}); the task may still finish: {check}"
    )


def _status_unknown(running: list[Watched], why: str) -> None:
    for task in running:
        task.status = {
            "status": "failed",
            "error": f"status unknown: get-task-status {why} (the task runs on); "
            f"check later with `upscayl-cloud client status {task.task_id}`",
        }
