"""Watching several tasks through get-upscayl-history pages: a run of many
tasks within a get-task-status limit that could never poll them one by one,
the pages followed (and no further than needed), and servers whose history is
of no use met by polling task by task, as before."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, RenamingProxy, write_image
from upscayl_cloud.client import Client, RetryPolicy, upscale
from upscayl_cloud.client.polling import PollBudget
from upscayl_cloud.client.sweep import HistorySweep
from upscayl_cloud.client.uploads import upload_file

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


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No workers: tasks stay pending, in the order they were started."""
    running = Server(tmp_path_factory.mktemp("sweep-idle") / "data", workers=0)
    yield running.start()
    running.stop()


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
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(3)]
    with (
        RenamingProxy(server.url, {}, history=history) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale(images, model=FAST, scale=2, client=api, batch_size=1)
    assert report.ok, report.results
    assert proxy.hits.count("/get-upscayl-history") == 1
    assert proxy.hits.count("/get-task-status") >= 3


def test_a_finished_task_listed_without_its_links_is_asked_about_directly(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(3)]
    with (
        RenamingProxy(server.url, {}, history="linkless") as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale(images, model=FAST, scale=2, client=api, batch_size=1)
    assert report.ok, report.results
    assert proxy.hits.count("/get-upscayl-history") >= 1
    assert proxy.hits.count("/get-task-status") >= 3  # each, once finished


def _started(server: Server, tmp_path: Path, count: int) -> tuple[Client, list[str]]:
    """A client and the ids of ``count`` tasks it started, oldest first."""
    key = new_principal(server.ctx, credits=count)[0]
    api = Client(server.url, key, poll=QUICK_POLL, retry=QUICK_RETRY)
    image = write_image(tmp_path / "a.png", 16, 16)
    ids = [api.start_task([upload_file(api, image, file_type="image/png")]) for _ in range(count)]
    return api, ids


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
        shown = sweep.statuses(dict.fromkeys(ours), [])
        assert set(shown) == set(ours) and sweep.pages == 3
        assert all(shown[task]["status"] == "pending" for task in ours)
        created = {task: shown[task]["createdAt"] for task in ours}

        # Knowing it: from the newest running one, [7 6 5] [4 3 2].
        sweep.pages = 0
        assert set(sweep.statuses(created, list(created.values()))) == set(ours)
        assert sweep.pages == 2

        # A task the history does not list (gone, say) as old as task 4: the
        # pages stop once past it, [7 6 5] [4 3 2], instead of reading on.
        missing = {ids[7]: created[ids[7]], str(uuid.uuid4()): created[ids[4]]}
        sweep.pages = 0
        assert set(sweep.statuses(missing, list(created.values()))) == {ids[7]}
        assert sweep.pages == 2 and sweep.usable


def test_a_history_that_shows_none_of_the_running_tasks_is_not_read_again(
    idle: Server, tmp_path: Path
) -> None:
    api, _ids = _started(idle, tmp_path, 2)
    with api:
        sweep = HistorySweep(api)
        assert sweep.statuses({str(uuid.uuid4()): None}, []) == {}
        assert sweep.pages == 1 and not sweep.usable
        assert sweep.statuses({str(uuid.uuid4()): None}, []) == {}
        assert sweep.pages == 1
