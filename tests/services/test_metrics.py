"""The task counts /metrics reports: unfinished tasks counted at the scrape,
finished ones counted as they finish (``task_counts``), equal to the rows;
read without the write lock, and left out (not failing the scrape) while
the database cannot be read; the process's own metrics beside them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update

from support.tasks import bare_tasks, queued_task
from upscayl_cloud.db.engine import make_engine
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


def test_a_task_whose_worker_died_counts_as_waiting(ctx: Context, principal: Principal) -> None:
    """It stays "processing" until its lease is claimed again, and was
    missing from the queue depth: with every worker dead, nothing waited."""
    for _ in range(3):
        queued_task(ctx, principal)
    dead = claim(ctx.db, "dead", 30, 3)
    claim(ctx.db, "alive", 30, 3)
    last = claim(ctx.db, "dead on its last attempt", 30, 3)
    assert dead is not None and last is not None
    with ctx.db.begin() as conn:  # both workers died: their leases ran out
        for held, attempts in ((dead, 1), (last, 3)):
            conn.execute(
                update(tasks)
                .where(tasks.c.id == held.task_id)
                .values(lease_until=0, attempts=attempts)
            )
    scraped = _scraped(ctx)
    assert scraped["processing"] == 3 and scraped["pending"] == 0
    assert scraped["queue"] == 1  # the last attempt's waits for the reaper, not a worker


def test_a_scrape_does_not_wait_for_the_write_lock(ctx: Context, principal: Principal) -> None:
    """On SQLite a scrape took the single write lock (``BEGIN IMMEDIATE``)
    and queued behind every heartbeat and claim; held for long, it failed.
    On PostgreSQL nothing locks a reader out: both must answer at once."""
    queued_task(ctx, principal)
    scraped: list[dict[str, float]] = []
    with ctx.db.connect() as writer:
        writer.begin()  # on SQLite, BEGIN IMMEDIATE: the write lock (db/engine.py)
        if ctx.db.dialect.name == "postgresql":
            writer.execute(text("LOCK TABLE tasks IN EXCLUSIVE MODE"))
        scrape = threading.Thread(target=lambda: scraped.append(_scraped(ctx)), daemon=True)
        scrape.start()
        scrape.join(5)
        finished_while_locked = not scrape.is_alive()
        writer.rollback()
    scrape.join(60)
    assert finished_while_locked
    assert scraped[0]["pending"] == 1


def test_an_unreadable_database_leaves_the_task_counts_out(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """The scrape failed as a whole (a 503), losing this process's own
    counters when an outage is when they matter. The database here is a
    real one that refuses connections (nothing listens on port 1)."""
    gone = replace(ctx, db=make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    metrics = Metrics(gone)
    try:
        with caplog.at_level(logging.WARNING, logger="upscayl_cloud.services.metrics"):
            text_out = generate_latest(metrics.registry).decode()
            generate_latest(metrics.registry)
    finally:
        gone.db.dispose()
    assert len(caplog.records) == 1  # once per outage, not once a scrape
    families = {f.name: f for f in text_string_to_metric_families(text_out)}
    assert families["upscayl_database_up"].samples[0].value == 0
    assert "upscayl_tasks" not in families and "upscayl_queue_depth" not in families
    assert "upscayl_stalled_tasks" in families
    assert (
        _scraped(ctx)
        and "upscayl_database_up 1.0" in generate_latest(Metrics(ctx).registry).decode()
    )


def test_the_process_reports_its_memory_and_descriptors(ctx: Context) -> None:
    """Deployments are sized by memory per worker and open files; neither
    was exported."""
    families = {
        f.name
        for f in text_string_to_metric_families(
            generate_latest(Metrics(ctx, task_counts=False).registry).decode()
        )
    }
    assert {"process_resident_memory_bytes", "process_open_fds", "python_info"} <= families
