"""Watching several tasks through get-upscayl-history pages: a run of many
tasks within a get-task-status limit that could never poll them one by one,
the pages followed (and no further than needed), and servers whose history is
of no use met by polling task by task, as before."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, RenamingProxy, write_image
from upscayl_cloud.client import (
    ApiError,
    Client,
    HistoryPage,
    RetryPolicy,
    UpscaleReport,
    upscale,
)
from upscayl_cloud.client.polling import PollBudget
from upscayl_cloud.client.sweep import HistorySweep
from upscayl_cloud.client.uploads import upload_file
from upscayl_cloud.client.watched import Watched

#: Two status calls an hour: a run of four tasks could not be polled one by one.
STATUS_SPENT = json.dumps(
    {"get-task-status": "2 per hour", "get-upscayl-history": "1 per 2 seconds"}
)


@pytest.fixture(scope="module")
def status_spent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("sweep") / "data"
    running = Server(data, workers=1, engine_threads=2, rate_limits=STATUS_SPENT)
    yield running.start()
    running.stop()


def _through_proxy(
    server: Server, api_key: str, tmp_path: Path, files: int, batch_size: int, **proxied: Any
) -> tuple[UpscaleReport, RenamingProxy]:
    """Upscale ``files`` tiny images in tasks of ``batch_size`` through a
    :class:`RenamingProxy` made with ``proxied``; the report and the proxy
    (its ``hits``)."""
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(files)]
    with (
        RenamingProxy(server.url, {}, **proxied) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale(
            images, model=FAST, scale=2, thumbnails=True, client=api, batch_size=batch_size
        )
    return report, proxy


def _hourly(budget: PollBudget) -> float:
    return budget.capacity + budget.rate * 3600


@pytest.mark.parametrize("retry", [QUICK_RETRY, RetryPolicy(attempts=1)], ids=["retries", "once"])
def test_a_run_of_many_tasks_is_watched_through_the_history(
    status_spent: Server, tmp_path: Path, retry: RetryPolicy
) -> None:
    """Four tasks, two status calls an hour: every status came from history
    pages, whose published limit (1,800 an hour) paced them. Pages asked for
    quicker than one per 2 s are refused with a short Retry-After, which is
    waited out even where the client makes one attempt only."""
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(4)]
    key = new_principal(status_spent.ctx, credits=10)[0]
    with (
        RenamingProxy(status_spent.url, {}) as proxy,
        Client(proxy.url, key, poll=QUICK_POLL, retry=retry) as api,
    ):
        report = upscale(images, model=FAST, scale=2, client=api, batch_size=1)
        assert _hourly(api.history_budget) == pytest.approx(0.9 * 1800)
    assert report.ok, report.results
    assert len({r.task_id for r in report.results}) == 4
    for image, result in zip(images, report.results, strict=True):
        assert result.output == tmp_path / f"{image.stem}_upscayl_2x_{FAST}.jpg"
        assert result.output.stat().st_size > 0
    assert proxy.hits.count("/get-task-status") == 0
    assert proxy.hits.count("/get-upscayl-history") >= 1


@pytest.mark.parametrize("history", ["refused", "anonymous"])
def test_a_history_of_no_use_is_tried_once_then_tasks_are_polled_one_by_one(
    server: Server, api_key: str, tmp_path: Path, history: str
) -> None:
    report, proxy = _through_proxy(server, api_key, tmp_path, 3, 1, history=history)
    assert report.ok, report.results
    assert proxy.hits.count("/get-upscayl-history") == 1
    assert proxy.hits.count("/get-task-status") >= 3


def _started(server: Server, tmp_path: Path, count: int) -> tuple[Client, list[str]]:
    """A client and the ids of ``count`` tasks it started, oldest first."""
    key = new_principal(server.ctx, credits=count)[0]
    api = Client(server.url, key, poll=QUICK_POLL, retry=QUICK_RETRY)
    image = write_image(tmp_path / "a.png", 16, 16)
    ids = [api.start_task([upload_file(api, image, file_type="image/png")]) for _ in range(count)]
    return api, ids


def _watched(task_id: str, created_at: int | None = None) -> Watched:
    return Watched(task_id, {}, created_at=created_at)


class _PageSizes(Client):
    """The real client, noting the ``limit`` of each history page it asks for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: list[int | None] = []

    def get_history(self, **filters: Any) -> HistoryPage:
        self.limits.append(filters.get("limit"))
        return super().get_history(**filters)


def test_pages_are_followed_from_the_newest_running_task_and_no_further_than_the_oldest(
    idle: Server, tmp_path: Path
) -> None:
    """Ten tasks, three of them ours (2, 4 and 7, oldest first), pages of three."""
    api, ids = _started(idle, tmp_path, 10)
    with api:
        ours = [ids[2], ids[4], ids[7]]
        sweep = HistorySweep(api, page_limit=3)
        # Not knowing when they were created: from the newest task of all,
        # [9 8 7] [6 5 4] [3 2 1].
        shown = sweep.statuses([_watched(task) for task in ours], [])
        assert set(shown) == set(ours) and sweep.pages == 3
        assert all(shown[task]["status"] == "pending" for task in ours)
        run = [_watched(task, shown[task]["createdAt"]) for task in ours]

        # Knowing it: from the newest running one, [7 6 5] [4 3 2].
        sweep.pages = 0
        assert set(sweep.statuses(run, run)) == set(ours)
        assert sweep.pages == 2

        # A task the history does not list (gone, say) as old as task 4: the
        # pages stop once past it, [7 6 5] [4 3 2], instead of reading on.
        missing = [run[2], _watched(str(uuid.uuid4()), run[1].created_at)]
        sweep.pages = 0
        assert set(sweep.statuses(missing, run)) == {ids[7]}
        assert sweep.pages == 2 and sweep.usable


def test_pages_are_sized_for_the_runs_tasks_between_the_oldest_and_newest_running(
    idle: Server, tmp_path: Path
) -> None:
    """Twenty-five tasks, the run's three the newest: one page of 13 (3 + 10
    of other programs) once their times are known, not of 100."""
    api, ids = _started(idle, tmp_path, 25)
    api.close()
    with _PageSizes(idle.url, api._key, poll=QUICK_POLL, retry=QUICK_RETRY) as sizes:
        run = [_watched(task) for task in ids[-3:]]
        sweep = HistorySweep(sizes)
        for task in run:
            task.seen(sweep.statuses(run, run)[task.task_id])
        assert sizes.limits == [100, 100, 100]
        sizes.limits.clear()
        assert set(sweep.statuses(run[1:], run)) == {ids[-2], ids[-1]}
        assert sizes.limits == [2 + 10]


def test_a_history_that_shows_none_of_the_running_tasks_is_not_read_again(
    idle: Server, tmp_path: Path
) -> None:
    api, _ids = _started(idle, tmp_path, 2)
    with api:
        sweep = HistorySweep(api)
        assert sweep.statuses([_watched(str(uuid.uuid4()))], []) == {}
        assert sweep.pages == 1 and not sweep.usable
        assert sweep.statuses([_watched(str(uuid.uuid4()))], []) == {}
        assert sweep.pages == 1


class _OddItems(Client):
    """A stand-in for a history that also lists what is not a task as the
    spec has it (another program's, on the same key): the real pages, with
    junk added."""

    def get_history(self, **filters: Any) -> HistoryPage:
        page = super().get_history(**filters)
        junk: list[Any] = ["a string", {"taskId": ["unhashable"]}, {"taskId": 7}, None]
        junk.append({"taskId": "not-ours", "status": "completed", "files": {"a": 1}})
        page["data"] = junk + list(page["data"])
        return page


def test_items_of_the_history_that_are_not_tasks_are_skipped(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(3)]
    with _OddItems(server.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        report = upscale(images, model=FAST, scale=2, client=api, batch_size=1)
    assert report.ok, report.results


@pytest.mark.parametrize("history", ["partial", "thumbless", "linkless"])
def test_a_finished_task_listed_with_less_than_the_run_needs_is_asked_about_directly(
    server: Server, api_key: str, tmp_path: Path, history: str
) -> None:
    """Two tasks of two files; the history lists only the first file of each
    ("partial"), no thumbnails ("thumbless") or no results ("linkless"):
    every result and thumbnail is still saved, from status calls."""
    report, proxy = _through_proxy(server, api_key, tmp_path, 4, 2, history=history)
    assert report.ok, report.results
    assert all(r.output and r.thumbnail and not r.reason for r in report.results), report.results
    assert proxy.hits.count("/get-upscayl-history") >= 1
    assert proxy.hits.count("/get-task-status") >= 2


def test_a_history_that_fails_while_status_calls_work_is_dropped(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A history answering 500 (one bad row, say) is tried once, not every round."""
    report, proxy = _through_proxy(server, api_key, tmp_path, 3, 1, history="broken")
    assert report.ok, report.results
    assert proxy.hits.count("/get-upscayl-history") <= QUICK_RETRY.attempts  # one call


class _HistoryMissesTheFirstTask(Client):
    """A stand-in for a history whose pages do not list one of the run's
    tasks (crowded out by other programs'): the real pages, less that one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first: str | None = None

    def start_task(self, *args: Any, **kwargs: Any) -> str:
        task_id = super().start_task(*args, **kwargs)
        self.first = self.first or task_id
        return task_id

    def get_history(self, **filters: Any) -> HistoryPage:
        page = super().get_history(**filters)
        page["data"] = [item for item in page["data"] if item.get("taskId") != self.first]
        return page


def test_a_spent_status_limit_gives_up_only_the_tasks_history_does_not_show(
    status_spent: Server, tmp_path: Path
) -> None:
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(3)]
    key = new_principal(status_spent.ctx, credits=10)[0]
    with _HistoryMissesTheFirstTask(
        status_spent.url, key, poll=QUICK_POLL, retry=QUICK_RETRY
    ) as api:
        for _ in range(2):  # another program spends the key's two status calls
            with pytest.raises(ApiError):
                api.get_task_status(str(uuid.uuid4()))
        report = upscale(images, model=FAST, scale=2, client=api, batch_size=1)
    first, *others = report.results
    assert first.status == "failed" and first.task_id == api.first
    assert (first.reason or "").startswith("status unknown: get-task-status limit reached")
    assert [r.status for r in others] == ["done", "done"], others


def test_a_run_of_one_task_reads_no_history(server: Server, api_key: str, tmp_path: Path) -> None:
    report, proxy = _through_proxy(server, api_key, tmp_path, 1, 1)
    assert report.ok, report.results
    assert "/get-upscayl-history" not in proxy.hits
    assert proxy.hits.count("/get-task-status") >= 1
