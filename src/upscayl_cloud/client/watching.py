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

A task that never finishes (a server with no worker running keeps it
pending) used to be polled for ever without a word. A task that shows no
progress for ``PollSchedule.stall_seconds`` is told once through
``on_notice``, and a ``timeout`` ends the wait: the tasks still running are
then reported as such, with the ``client status`` that finds their results.
No pause, retry or request of the watch runs past that timeout: each poll
was a full retry loop (up to five tries, each waiting a ``Retry-After`` of up
to 2 minutes, or a 60 s read timeout), and a timeout of a minute could last
ten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from upscayl_cloud.client._core import FINISHED, DeadlinePassed
from upscayl_cloud.client.errors import RateLimitedError, UpscaylError, describe, is_outage
from upscayl_cloud.client.polling import percent
from upscayl_cloud.client.sweep import HistorySweep
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.watched import Watched

ProgressHook = Callable[[str, int, float], None]
NoticeHook = Callable[[str], None]


def watch(
    api: Client,
    tasks: list[Watched],
    on_progress: ProgressHook,
    thumbnails: bool = False,
    timeout: float | None = None,
    on_notice: NoticeHook | None = None,
) -> None:
    """Poll every task until each is completed or failed (or given up on, with
    its reason in ``status["error"]``). ``thumbnails``: the run will fetch
    each file's ``thumbnailLink`` too, so a history item must carry it.
    ``timeout``: seconds to wait at most (None: as long as the tasks run);
    the tasks still running then are given up on too, their reason saying
    so. ``on_notice`` hears of each task that shows no progress for long."""
    deadline = None if timeout is None else time.monotonic() + timeout
    running = list(tasks)
    # One task is asked about directly: no history page is cheaper than that.
    sweep = HistorySweep(api, thumbnails) if len(tasks) > 1 else None
    refused: str | None = None  # why get-task-status cannot be asked any more
    for delay in api.poll.delays():
        shown = sweep.statuses(running, tasks, deadline) if sweep else {}
        answered = False  # whether a status call got an answer this round
        for task in list(running):
            if task.task_id in shown:
                task.seen(shown[task.task_id])
            elif refused is not None:
                _status_unknown([task], refused)
            else:
                try:
                    outcome = _poll(api, task, deadline)
                    if outcome == "again":
                        continue  # ask again next round
                    answered = answered or outcome == "answered"
                except _StatusRefusedError as exc:
                    refused = str(exc)
                    _status_unknown([task], refused)
            _progress(task, running, on_progress)
        if sweep is not None and answered:
            sweep.status_calls_work()
        if refused is not None and running and (sweep is None or not sweep.usable):
            # The limit is the key's, and no history page can stand in for it.
            _status_unknown(running, refused)
            return
        if not running:
            return
        if on_notice is not None:
            _tell_stalls(api, running, on_notice)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                _still_running(running, timeout or 0)
                return
            delay = min(delay, left)
        time.sleep(delay)


class _StatusRefusedError(Exception):
    """get-task-status refuses the key for longer than is worth waiting (its
    hourly limit spent, perhaps by another program): say so instead of
    sitting silent for an hour. ``str()`` says how."""


def _poll(
    api: Client, task: Watched, deadline: float | None = None
) -> Literal["answered", "again", "given up"]:
    """Ask get-task-status about ``task``: "answered" (``task.status`` holds
    the server's answer), "again" (ask next round) or "given up" (it holds a
    failure of ours, with the reason).

    Within ``deadline`` (monotonic): a pause of the poll budget that would
    end past it ends at it, with one last poll (as ``Client.wait`` does), and
    a poll whose turn comes after it is not sent ("again": the caller's
    deadline check reports the task still running)."""
    pause = api.poll_budget.take()
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return "again"
        pause = min(pause, left)
    time.sleep(pause)
    try:
        with api._deadlines.bounded(deadline):
            task.seen(api.get_task_status(task.task_id))
    except DeadlinePassed:
        return "again"
    except RateLimitedError as exc:
        wait = exc.retry_after
        short = wait is not None and wait <= api.retry.max_retry_after
        if short and not _given_up(api, task):
            # Short, but the client's attempts ran out first. Refused like this
            # for longer than an outage is waited out, it is reported as a
            # long refusal.
            time.sleep(_until(deadline, wait or 0))
            return "again"
        if short and task.unreachable_since is not None:
            lasted = time.monotonic() - task.unreachable_since
            raise _StatusRefusedError(f"refused (429) for {lasted:.0f} s") from exc
        raise _StatusRefusedError(
            f"limit reached{f' for {wait:.0f} s' if wait is not None else ''}"
        ) from exc
    except UpscaylError as exc:
        if is_outage(exc) and not _given_up(api, task):
            return "again"
        task.status = {"status": "failed", "error": _unknown(api, task, exc)}
        return "given up"
    return "answered"


def _until(deadline: float | None, seconds: float) -> float:
    """``seconds``, but none past ``deadline`` (monotonic; None: no bound)."""
    if deadline is None:
        return seconds
    return max(0.0, min(seconds, deadline - time.monotonic()))


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


def _status_unknown(tasks: list[Watched], why: str) -> None:
    for task in tasks:
        task.status = {
            "status": "failed",
            "error": f"status unknown: get-task-status {why} (the task runs on); "
            f"check later with `upscayl-cloud client status {task.task_id}`",
        }


def _tell_stalls(api: Client, running: list[Watched], on_notice: NoticeHook) -> None:
    """Tell, once per task, of a task whose status and percentage have not
    changed for ``stall_seconds``; a pending one may wait for a worker that
    is not running."""
    now = time.monotonic()
    for task in running:
        lasted = now - task.progressed_at
        if task.stall_told or lasted < api.poll.stall_seconds:
            continue
        task.stall_told = True
        state = str(task.status.get("status") or "not answered")
        if state == "pending":
            what = f"is still pending after {_duration(lasted)}: no worker may be running"
        else:
            shown = f"{state}, {percent(task.status):.0f}%"
            what = f"has shown no progress for {_duration(lasted)} ({shown})"
        on_notice(
            f"task {task.task_id} {what}; still waiting (Ctrl-C stops waiting, not the task: "
            f"`upscayl-cloud client status {task.task_id}` shows it later)"
        )


def _still_running(tasks: list[Watched], timeout: float) -> None:
    """The wait's timeout has passed: each task is left running on the
    server, its files reported with where to find their results."""
    for task in tasks:
        state = str(task.status.get("status") or "not answered")
        task.status = {
            "status": state,
            "error": f"task {task.task_id} still {state} after waiting {_duration(timeout)} "
            f"(the timeout); it runs on: `upscayl-cloud client status {task.task_id}` "
            "shows its results once it is done",
        }


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
