"""Asking about many running tasks at once, through get-upscayl-history.

get-task-status answers for one task, and the spec allows 100 of them an hour
per key for all tasks together: a run of 20 tasks asked about each of them
every 20 minutes. One history page lists up to 100 tasks with the same fields
(on this server: ``taskId``, ``createdAt``, status, progress and fresh signed
links), and get-upscayl-history has an hourly limit of its own. So while a
run has several tasks, each polling round reads the history first, and asks
get-task-status only about the tasks the history did not show.

It is only an economy, never a source of wrong answers: a task is matched by
its ``taskId``, and a finished one is taken from the history only when every
delivered file has its ``downloadLink``. A server whose history lists no
``taskId`` (the spec's ``ProcessingTask`` has none), reads ``timestampOffset``
some other way, or refuses the call, shows none of the run's tasks on the first
try, and its tasks are polled one by one from then on, as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from typing import Any

from upscayl_cloud.client._core import FINISHED
from upscayl_cloud.client.errors import RateLimitedError, UpscaylError, is_outage
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.types import TaskStatus

#: The spec's largest ``limit`` of one history page.
PAGE_LIMIT = 100
#: Tasks of other programs using the same key that a page is sized to step over
#: between the run's own (a page that holds too few costs one more page).
_OTHERS_MARGIN = 10


class HistorySweep:
    """Reads the statuses of a run's running tasks from history pages."""

    def __init__(self, api: Client, page_limit: int = PAGE_LIMIT) -> None:
        self._api = api
        self._page_limit = max(1, min(PAGE_LIMIT, page_limit))
        #: False once the server's history proved of no use for this run.
        self.usable = True
        #: History pages read so far.
        self.pages = 0

    def statuses(
        self, running: Mapping[str, int | None], started: Collection[int]
    ) -> dict[str, TaskStatus]:
        """The statuses history shows of the ``running`` tasks (task id ->
        ``createdAt`` where known); ``started`` are the ``createdAt`` known of
        all the run's tasks, finished ones included, which size the pages.

        Pages are read newest first, from the newest running task when every
        ``createdAt`` is known (else from the newest task of all), until every
        running task was shown or the pages go past the oldest of them. Each
        page is one call, paced by the client's ``history_budget``."""
        if not self.usable or not running:
            return {}
        created = list(running.values())
        known = [c for c in created if c is not None]
        newest = max(known) if len(known) == len(created) else None
        oldest = min(known) if newest is not None else None
        size = self._page_size(newest, oldest, started)
        offset = None if newest is None else newest + 1
        shown: dict[str, TaskStatus] = {}
        seen: set[str] = set()
        for _ in range(math.ceil(len(running) / size) + 2):
            time.sleep(self._api.history_budget.take())
            try:
                page = self._api.get_history(timestamp_offset=offset, limit=size)
            except UpscaylError as exc:
                if self._waited_out(exc):
                    continue  # limited for a few seconds only: this page again
                # Down for a while: next round may do. Refused (no such
                # operation, its hourly limit spent by another program, ...):
                # poll one by one from now on.
                self.usable = is_outage(exc)
                return shown
            self.pages += 1
            for item in page.get("data") or []:
                task_id = item.get("taskId")
                if task_id in running:
                    seen.add(task_id)
                    if _complete(item):
                        shown[task_id] = item
            offset = _next_offset(page)
            if len(seen) == len(running) or offset is None:
                break
            if oldest is not None and offset <= oldest:
                break  # past the oldest running task: the rest are not listed
        if not seen:
            self.usable = False
        return shown

    def _waited_out(self, exc: UpscaylError) -> bool:
        """Whether ``exc`` is a 429 short enough to wait out (which it is, now):
        the client's own attempts may run out within a window of a few seconds."""
        wait = exc.retry_after if isinstance(exc, RateLimitedError) else None
        if wait is None or wait > self._api.retry.max_retry_after:
            return False
        time.sleep(wait)
        return True

    def _page_size(self, newest: int | None, oldest: int | None, started: Collection[int]) -> int:
        """Enough for the run's own tasks between the newest and the oldest
        running one, and a few of other programs; the largest page when they
        are not known yet (a page of 100 tasks with all their signed links is
        work for the server that a round of two running tasks does not need)."""
        if newest is None or oldest is None:
            return self._page_limit
        between = sum(1 for stamp in started if oldest <= stamp <= newest)
        return min(self._page_limit, between + _OTHERS_MARGIN)


def _complete(item: Mapping[str, Any]) -> bool:
    """Whether a history item can stand for a status call: a running task's
    progress always can; a finished one only with every delivered file's link."""
    if item.get("status") not in FINISHED:
        return True
    return all(entry.get("downloadLink") for entry in item.get("files") or [])


def _next_offset(page: Mapping[str, Any]) -> int | None:
    pagination = page.get("pagination") or {}
    offset = pagination.get("nextOffset")
    if not pagination.get("hasMore") or not isinstance(offset, int) or isinstance(offset, bool):
        return None
    return offset
