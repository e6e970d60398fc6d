"""Polling within get-task-status's hourly limit, a spent limit reported (not slept
on), and polling through a server outage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, RenamingProxy, write_image
from upscayl_cloud.client import Client, PollSchedule, RetryPolicy, UpscaleReport, upscale
from upscayl_cloud.client.polling import PollBudget, published_limit

#: No workers: tasks stay queued, so only the status limit can end the polling.
STATUS_LIMIT = json.dumps({"get-task-status": "2 per hour"})


@pytest.fixture(scope="module")
def status_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("status") / "data", workers=0, rate_limits=STATUS_LIMIT
    )
    yield running.start()
    running.stop()


@pytest.fixture(scope="module")
def status_every_2s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("status2s") / "data"
    limits = json.dumps({"get-task-status": "1 per 2 seconds"})
    running = Server(data, workers=1, engine_threads=2, rate_limits=limits)
    yield running.start()
    running.stop()


def _simulate(tasks: int, hours: float) -> list[float]:
    """When ``tasks`` never-ending tasks are polled, round after round, on the
    default schedule and budget (a simulated clock: no sleeping)."""
    now = 0.0
    budget = PollBudget(PollSchedule(), clock=lambda: now)
    sent: list[float] = []
    for delay in PollSchedule().delays():
        for _ in range(tasks):
            now += budget.take()
            sent.append(now)
        if now > hours * 3600:
            return sent
        now += delay
    raise AssertionError("unreachable")


@pytest.mark.parametrize("tasks", [1, 3, 20])
def test_polls_stay_within_the_hourly_status_limit(tasks: int) -> None:
    sent = _simulate(tasks, hours=3)
    # A quick start: up to 30 polls at once (one task is asked again within a second).
    assert sent[min(tasks, 30) - 1] == 0 and (tasks > 1 or sent[1] < 1)
    for start in sent:  # every hour-long window, wherever it begins
        in_window = sum(start <= t < start + 3600 for t in sent)
        assert in_window <= 0.9 * 100, (start, in_window)
    assert len(sent) >= 3 * 60  # and the budget is used, not wasted


def test_spent_status_limit_is_reported_not_slept_on(
    status_limited: Server, tmp_path: Path
) -> None:
    key = new_principal(status_limited.ctx, credits=5)[0]
    image = write_image(tmp_path / "a.png", 16, 16)
    reports: list[UpscaleReport] = []
    with Client(status_limited.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        run = threading.Thread(
            target=lambda: reports.append(upscale([image], model=FAST, client=api)), daemon=True
        )
        began = time.monotonic()
        run.start()
        run.join(timeout=30)
        assert not run.is_alive(), "upscale slept on an hour-long Retry-After"
    assert time.monotonic() - began < 30
    [result] = reports[0].results
    assert result.status == "failed" and result.task_id is not None
    reason = result.reason or ""
    assert reason.startswith("status unknown: get-task-status limit reached")
    assert f"upscayl-cloud client status {result.task_id}" in reason


def test_a_short_retry_after_is_waited_out_even_past_the_clients_attempts(
    status_every_2s: Server, tmp_path: Path
) -> None:
    key = new_principal(status_every_2s.ctx, credits=5)[0]
    image = write_image(tmp_path / "a.png", 16, 16)
    once = RetryPolicy(attempts=1)  # every 429 reaches upscale() as RateLimitedError
    with Client(status_every_2s.url, key, poll=QUICK_POLL, retry=once) as api:
        report = upscale([image], model=FAST, scale=2, client=api)
    assert report.ok, report.results


def test_a_server_that_keeps_refusing_with_short_retry_afters_is_given_up_on(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """Each 429 says "in 1 s", forever: waited out like an outage, then reported."""
    image = write_image(tmp_path / "a.png", 16, 16)
    schedule = PollSchedule(initial=0.1, maximum=0.5, outage_seconds=2)
    reports: list[UpscaleReport] = []
    with (
        RenamingProxy(server.url, {}, status_throttled=True) as proxy,
        Client(proxy.url, api_key, poll=schedule, retry=RetryPolicy(attempts=1)) as api,
    ):
        run = threading.Thread(
            target=lambda: reports.append(upscale([image], model=FAST, scale=2, client=api)),
            daemon=True,
        )
        run.start()
        run.join(timeout=30)
        assert not run.is_alive(), "short Retry-Afters were waited out for ever"
    [result] = reports[0].results
    assert result.status == "failed" and result.task_id is not None
    reason = result.reason or ""
    assert reason.startswith("status unknown: get-task-status refused (429) for "), reason
    assert f"upscayl-cloud client status {result.task_id}" in reason
    assert proxy.hits.count("/get-task-status") >= 2  # waited out, asked again


def test_a_new_schedule_brings_budgets_of_its_own_but_not_spent_polls_back() -> None:
    """Assigning ``poll`` used to keep the old schedule's budgets; the new
    ones start from what the old had left, not full again."""
    api = Client("http://127.0.0.1:9", "no-request-is-made")
    old = api.poll_budget
    api.poll = PollSchedule(hourly_limit=1000)
    assert api.poll_budget is not old
    assert _hourly(api.poll_budget) == pytest.approx(900)
    assert _hourly(api.history_budget) == pytest.approx(90)  # history's own limit
    while api.poll_budget.take() == 0:
        pass  # the burst, spent
    api.poll = api.poll
    assert api.poll_budget.take() > 0  # still spent
    api.close()


def _through_outage(
    server: Server, api_key: str, image: Path, outage: float, patience: float
) -> tuple[UpscaleReport, int]:
    """The report, and how many status calls failed (more than one call's retries)."""
    schedule = PollSchedule(initial=0.1, factor=1.5, maximum=0.5, outage_seconds=patience)
    with (
        RenamingProxy(server.url, {}, status_outage=outage) as proxy,
        Client(proxy.url, api_key, poll=schedule, retry=QUICK_RETRY) as api,
    ):
        report = upscale([image], model=FAST, scale=2, client=api)
    return report, proxy.refused


def test_polling_goes_on_through_a_short_outage(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    # Status calls fail for 3 s, many times the client's retries (well under 1 s).
    report, refused = _through_outage(server, api_key, image, outage=3, patience=60)
    assert report.ok, report.results
    assert refused > QUICK_RETRY.attempts
    assert report.results[0].output == tmp_path / f"a_upscayl_2x_{FAST}.jpg"


def test_a_long_outage_names_the_task_to_check_later(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "b.png", 16, 16)
    began = time.monotonic()
    report, refused = _through_outage(server, api_key, image, outage=3600, patience=2)
    assert time.monotonic() - began < 20
    [result] = report.results
    assert result.status == "failed" and result.task_id is not None
    reason = result.reason or ""
    assert f"status of task {result.task_id} unknown: the server could not be asked" in reason
    assert f"upscayl-cloud client status {result.task_id}" in reason
    assert refused > QUICK_RETRY.attempts  # it was asked again, not given up at once


def _hourly(budget: PollBudget) -> float:
    """The most polls ``budget`` lets through in an hour."""
    return budget.capacity + budget.rate * 3600


def test_a_server_that_publishes_a_higher_status_limit_is_polled_faster(
    status_every_2s: Server, status_limited: Server, tmp_path: Path
) -> None:
    """One poll every 2 s is 1,800 an hour: the budget takes 90 % of it, not
    of the spec's 100. A server publishing less than the spec's is met as
    before (its 429 reported), not paced to a few silent polls an hour."""
    image = write_image(tmp_path / "a.png", 16, 16)
    key = new_principal(status_every_2s.ctx, credits=5)[0]
    with Client(status_every_2s.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        assert _hourly(api.poll_budget) == pytest.approx(90)
        assert upscale([image], model=FAST, scale=2, client=api).ok
        assert _hourly(api.poll_budget) == pytest.approx(0.9 * 1800)
    key = new_principal(status_limited.ctx, credits=5)[0]
    with Client(status_limited.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        upscale([image], model=FAST, client=api)
        assert _hourly(api.poll_budget) == pytest.approx(90)
    # A schedule that names its limit keeps it.
    named = PollSchedule(initial=0.1, maximum=0.5, hourly_limit=50)
    key = new_principal(status_every_2s.ctx, credits=5)[0]
    with Client(status_every_2s.url, key, poll=named, retry=QUICK_RETRY) as api:
        assert upscale([image], model=FAST, scale=2, client=api).ok
        assert _hourly(api.poll_budget) == pytest.approx(45)


@pytest.mark.parametrize(
    ("capabilities", "per_hour"),
    [
        ({"rateLimits": {"get-task-status": {"requests": 20, "periodSeconds": 60}}}, 1200),
        ({"rateLimits": {"get-task-status": {"requests": 100, "periodSeconds": 3600}}}, 100),
        ({"rateLimits": {"get-task-status": {"requests": True, "periodSeconds": 60}}}, None),
        ({"rateLimits": {"get-task-status": {"requests": 5, "periodSeconds": 0}}}, None),
        ({"rateLimits": {"start-task": {"requests": 5, "periodSeconds": 60}}}, None),
        ({"rateLimits": None}, None),
        ({}, None),
    ],
)
def test_the_published_status_limit_is_read_strictly(
    capabilities: dict[str, object], per_hour: int | None
) -> None:
    assert published_limit(capabilities, "get-task-status") == per_hour


def test_a_tiny_limit_still_polls_once_an_hour_and_bad_schedules_are_refused() -> None:
    now = 0.0
    budget = PollBudget(PollSchedule(hourly_limit=1), clock=lambda: now)
    assert budget.take() == 0
    assert budget.take() == pytest.approx(3600)  # not 10**9 s, as a near-zero rate gave
    for bad in ({"share": 0}, {"share": 1.5}, {"burst": 0}, {"hourly_limit": 0}):
        with pytest.raises(ValueError):
            PollSchedule(**bad)  # type: ignore[arg-type]


def test_wait_polls_at_its_deadline_when_the_budget_is_spent(
    client: Client, tmp_path: Path
) -> None:
    """A spent burst puts the next poll a minute away: ``wait(timeout=2)``
    asked once at its deadline, instead of raising unasked."""
    image = write_image(tmp_path / "a.png", 16, 16)
    [result] = upscale([image], model=FAST, scale=2, client=client).results
    assert result.task_id is not None
    while client.poll_budget.take() == 0:
        pass  # the burst, spent
    began = time.monotonic()
    status = client.wait(result.task_id, timeout=2)
    assert status["status"] == "completed"
    assert 1.5 < time.monotonic() - began < 30


def test_runs_on_one_client_share_its_raised_budget(
    status_every_2s: Server, tmp_path: Path
) -> None:
    """The published limit is taken once: a second run must not start from a
    full bucket again (N runs an hour would make N bursts)."""
    image = write_image(tmp_path / "a.png", 16, 16)
    key = new_principal(status_every_2s.ctx, credits=5)[0]
    with Client(status_every_2s.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        assert upscale([image], model=FAST, scale=2, client=api).ok
        budget = api.poll_budget
        assert upscale([image], model=FAST, scale=2, client=api).ok
        assert api.poll_budget is budget
