"""Asking about many running tasks at once, through get-upscayl-history.

get-task-status answers for one task, and the spec allows 100 of them an hour
per key for all tasks together: a run of 20 tasks asked about each of them
every 20 minutes. One history page lists up to 100 tasks with the same fields
(on this server: ``taskId``, ``createdAt``, status, progress and fresh signed
links), and get-upscayl-history has an hourly limit of its own. So while a
run has several tasks, each polling round reads the history first, and asks
get-task-status only about the tasks the history did not show.

It is only an economy, never a source of wrong answers: a task is matched by
its ``taskId``; a finished one is taken from the history only when every file
of the task is listed with the links the run downloads (else get-task-status
settles it); items that are not what the spec describes are skipped, since a
page also lists other programs' tasks. A server whose history lists no
``taskId`` (the spec's ``ProcessingTask`` has none), reads ``timestampOffset``
some other way, or refuses the call, shows none of the run's tasks on the first
try, and its tasks are polled one by one from then on, as before; so is one
whose history fails as if it were down while its status calls answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from upscayl_cloud.client._core import FINISHED, DeadlinePassed, beyond, next_offset
from upscayl_cloud.client.errors import RateLimitedError, UpscaylError, is_outage
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.watched import Watched

#: The spec's largest ``limit`` of one history page.
PAGE_LIMIT = 100
#: Tasks of other programs using the same key that a page is sized to step over
#: between the run's own (a page that holds too few costs one more page).
_OTHERS_MARGIN = 10


class HistorySweep:
    """Reads the statuses of a run's running tasks from history pages."""

    def __init__(self, api: Client, thumbnails: bool = False, page_limit: int = PAGE_LIMIT) -> None:
        self._api = api
        #: The links a finished task's files must carry to stand for a status
        #: call (the run downloads these).
        self._links = ("downloadLink", "thumbnailLink") if thumbnails else ("downloadLink",)
        self._page_limit = max(1, min(PAGE_LIMIT, page_limit))
        #: False once the server's history proved of no use for this run.
        self.usable = True
        #: History pages read so far.
        self.pages = 0
        #: Whether the last round's history failed as if the server were down.
        self._down = False

    def statuses(
        self,
        running: Sequence[Watched],
        run: Sequence[Watched],
        deadline: float | None = None,
    ) -> dict[str, Mapping[str, Any]]:
        """The statuses the history shows of the ``running`` tasks (of the
        run's ``run`` tasks, which size the pages), by task id.

        Pages are read newest first, from the newest running task when every
        ``createdAt`` is known (else from the newest task of all), until every
        running task was shown or the pages go past the oldest of them. Each
        page is one call, paced by the client's ``history_budget``. Nothing
        waits past ``deadline`` (monotonic): the round ends with what it has."""
        if not self.usable or not running:
            return {}
        wanted = {task.task_id: task for task in running}
        created = [task.created_at for task in running]
        known = [c for c in created if c is not None]
        newest = max(known) if len(known) == len(created) else None
        oldest = min(known) if newest is not None else None
        size = self._page_size(newest, oldest, run)
        offset = None if newest is None else newest + 1
        shown: dict[str, Mapping[str, Any]] = {}
        seen: set[str] = set()
        pages = waits = 0
        most = math.ceil(len(running) / size) + 2
        self._down = False
        while pages < most:
            pause = self._api.history_budget.take()
            if beyond(deadline, pause):
                return shown
            time.sleep(pause)
            try:
                with self._api._deadlines.bounded(deadline):
                    page = self._api.get_history(timestamp_offset=offset, limit=size)
            except DeadlinePassed:
                return shown
            except UpscaylError as exc:
                if beyond(deadline, _retry_after(exc) or 0.0):
                    return shown  # not worth judging the history by: the wait is over
                if waits < most and self._waited_out(exc):
                    waits += 1
                    continue  # limited for a few seconds only: this page again
                # Down for a while: next round may do (unless status calls
                # work meanwhile, see ``status_calls_work``). Refused (no such
                # operation, its hourly limit spent by another program, ...):
                # poll one by one from now on.
                self._down = is_outage(exc)
                self.usable = self._down
                return shown
            pages += 1
            self.pages += 1
            items = page.get("data")
            if not isinstance(items, list):
                self.usable = False  # not a history page as the spec has it
                return shown
            for item in items:
                task_id = item.get("taskId") if isinstance(item, Mapping) else None
                if not isinstance(task_id, str) or task_id not in wanted:
                    continue  # another program's task, or nothing we can read
                seen.add(task_id)
                if self._complete(item, wanted[task_id]):
                    shown[task_id] = item
            offset = next_offset(page)
            if len(seen) == len(wanted) or offset is None:
                break
            if oldest is not None and offset <= oldest:
                break  # past the oldest running task: the rest are not listed
        if pages and not seen:
            self.usable = False
        return shown

    def status_calls_work(self) -> None:
        """Status calls were answered this round: a history that failed as if
        the server were down is broken on its own (a 500 on one bad row, a
        504 from a slow page), and is not asked again for this run."""
        if self._down:
            self.usable = False

    def _complete(self, item: Mapping[str, Any], task: Watched) -> bool:
        """Whether a history item can stand for a status call: a running
        task's progress always can; a finished one only when every file of the
        task is listed with the links the run will download (a listing that
        leaves files out, whether they failed or the server lists less in its
        history, is settled by asking get-task-status)."""
        if item.get("status") not in FINISHED:
            return True
        files = item.get("files")
        if not isinstance(files, list):
            return False
        listed = {
            entry.get("fileName"): entry
            for entry in files
            if isinstance(entry, Mapping)
            and all(isinstance(entry.get(link), str) and entry.get(link) for link in self._links)
        }
        return all(name in listed for name in task.sources)

    def _waited_out(self, exc: UpscaylError) -> bool:
        """Whether ``exc`` is a 429 short enough to wait out (which it is, now):
        the client's own attempts may run out within a window of a few seconds."""
        wait = _retry_after(exc)
        if wait is None or wait > self._api.retry.max_retry_after:
            return False
        time.sleep(wait)
        return True

    def _page_size(self, newest: int | None, oldest: int | None, run: Sequence[Watched]) -> int:
        """Enough for the run's own tasks between the newest and the oldest
        running one, and a few of other programs; the largest page when they
        are not known yet (a page of 100 tasks with all their signed links is
        work for the server that a round of two running tasks does not need)."""
        if newest is None or oldest is None:
            return self._page_limit
        between = sum(
            1 for task in run if task.created_at is not None and oldest <= task.created_at <= newest
        )
        return min(self._page_limit, between + _OTHERS_MARGIN)


def _retry_after(exc: UpscaylError) -> float | None:
    """A 429's ``Retry-After``, or None (another failure, or none given)."""
    return exc.retry_after if isinstance(exc, RateLimitedError) else None
