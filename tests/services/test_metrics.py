"""The task counts /metrics reports: unfinished tasks counted at the scrape,
finished ones counted as they finish (``task_counts``), equal to the rows."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from support.tasks import bare_tasks, queued_task
from upscayl_cloud.db.tables import task_counts, task_files, tasks
from upscayl_cloud.queue.lease import claim, lock_for_finish
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.metrics import Metrics
from upscayl_cloud.services.results import FileOutcome, fail_task, finish_task, reap_lost


def _only_file(ctx: Context, task_id: str) -> int:
    with ctx.db.begin() as conn:
        return conn.execute(
            select(task_files.c.id).where(task_files.c.task_id == task_id)
        ).scalar_one()


def _scraped(ctx: Context) -> dict[str, float]:
    text = generate_latest(Metrics(ctx).registry).decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "upscayl_tasks":
                values[sample.labels["status"]] = sample.value
            elif sample.name == "upscayl_queue_depth":
                values["queue"] = sample.value
    return values


def _rows(ctx: Context) -> dict[str, int]:
    with ctx.db.begin() as conn:
        counted = conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))
        return dict(counted.all())


def test_every_way_a_task_finishes_is_counted(ctx: Context, principal: Principal) -> None:
    """Completed (finish_task), failed with every file (finish_task), failed
    as a whole (fail_task), reaped after its last worker died (reap_lost),
    and one left pending and one processing."""
    for _ in range(6):
        queued_task(ctx, principal)
    completed = claim(ctx.db, "w", 30, 3)
    ok_file = _only_file(ctx, completed.task_id)
    done = FileOutcome(ok_file, True, None, "r/k.png", "t/k.webp", "a.png", "image/png", 10, 4, 4)
    assert finish_task(ctx, completed, [done], {ok_file: "x"})
    all_failed = claim(ctx.db, "w", 30, 3)
    bad_file = _only_file(ctx, all_failed.task_id)
    assert finish_task(ctx, all_failed, [FileOutcome(bad_file, False, "bad")], {bad_file: "x"})
    assert fail_task(ctx, claim(ctx.db, "w", 30, 3), "crashed")
    claim(ctx.db, "dead", 0.01, 1)
    time.sleep(0.05)
    assert reap_lost(ctx) == 0  # attempts left: not lost yet
    last_attempt = ctx.settings.model_copy(update={"max_attempts": 1})
    assert reap_lost(replace(ctx, settings=last_attempt)) == 1
    claim(ctx.db, "w", 30, 3)  # processing

    assert _rows(ctx) == {"completed": 1, "failed": 3, "processing": 1, "pending": 1}
    assert _scraped(ctx) == {
        "pending": 1,
        "processing": 1,
        "completed": 1,
        "failed": 3,
        "queue": 1,
    }


def test_a_finish_that_loses_its_lease_counts_nothing(ctx: Context, principal: Principal) -> None:
    queued_task(ctx, principal)
    stale = claim(ctx.db, "dead", 0.01, 3)
    time.sleep(0.05)
    claim(ctx.db, "w", 30, 3)
    assert not fail_task(ctx, stale, "late")
    assert _scraped(ctx)["failed"] == 0


def test_concurrent_finishes_are_all_counted(ctx: Context) -> None:
    """Many workers finishing at once: no count is lost (on PostgreSQL, each
    adds to one of 16 rows under that row's lock)."""
    ids = bare_tasks(ctx.db, 40)
    claims = [claim(ctx.db, f"w{n}", 30, 3) for n in range(len(ids))]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def finish(share: list[object]) -> None:
        try:
            barrier.wait(10)
            for held in share:
                with ctx.db.begin() as conn:
                    assert lock_for_finish(conn, held, "completed", None)  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(claims[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert _scraped(ctx)["completed"] == 40
    with ctx.db.begin() as conn:
        used = conn.execute(select(func.count()).where(task_counts.c.count > 0)).scalar_one()
    assert used > 1  # spread over several rows
