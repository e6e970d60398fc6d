"""Outcome recording: credits captured once, released for failures, fenced by attempt."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest
from sqlalchemy import select

from support.tasks import queued_task
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.queue.lease import claim, release, renew
from upscayl_cloud.services import keys, results
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.results import (
    FileOutcome,
    fail_task,
    finish_task,
    output_folders,
    reap_lost,
)


def _file_ids(ctx: Context, task_id: str) -> list[int]:
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(task_files.c.id).where(task_files.c.task_id == task_id).order_by("position")
        ).all()
    return [r.id for r in rows]


def _ok(file_id: int) -> FileOutcome:
    return FileOutcome(
        file_id, True, None, "r/k.png", "t/k.webp", "a_upscayl.png", "image/png", 10, 4, 4
    )


def test_partial_batch_charges_only_successes(
    ctx: Context, principal: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = queued_task(ctx, principal, files=3)
    held = claim(ctx.db, "w", 30, 3)
    ids = _file_ids(ctx, task_id)
    outcomes = [_ok(ids[0]), FileOutcome(ids[1], False, "corrupt"), _ok(ids[2])]
    with caplog.at_level(logging.INFO, logger="upscayl_cloud.services.results"):
        assert finish_task(ctx, held, outcomes, {i: f"'f{i}'" for i in ids})
    # The operator's one line per task, findable by its id.
    assert caplog.messages == [
        f"task {task_id} attempt 1 completed: 2 of 3 files delivered, 2 credits charged"
    ]
    assert keys.account_credits(ctx, principal.account_id) == 10 - 2
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.status, row.credits_charged, row.progress) == ("completed", 2, 100)
    assert "1 of 3 files failed" in row.error and "corrupt" in row.error


def test_settles_at_the_price_reserved_not_todays(ctx: Context, principal: Principal) -> None:
    """A price raised (or lowered) while the task waits changes nothing for it."""
    task_id = queued_task(ctx, principal, files=3)  # reserved 3 at 1 credit each
    held = claim(ctx.db, "w", 30, 3)
    ids = _file_ids(ctx, task_id)
    outcomes = [_ok(ids[0]), _ok(ids[1]), FileOutcome(ids[2], False, "corrupt")]
    repriced = replace(ctx, settings=ctx.settings.model_copy(update={"credits_per_image": 5}))
    assert finish_task(repriced, held, outcomes, {i: "x" for i in ids})
    assert keys.account_credits(ctx, principal.account_id) == 10 - 2
    with ctx.db.begin() as conn:
        charged = conn.execute(
            select(tasks.c.credits_charged).where(tasks.c.id == task_id)
        ).scalar_one()
    assert charged == 2


def test_all_failed_releases_everything(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal, files=2)
    held = claim(ctx.db, "w", 30, 3)
    ids = _file_ids(ctx, task_id)
    finish_task(ctx, held, [FileOutcome(i, False, "bad") for i in ids], {i: "x" for i in ids})
    assert keys.account_credits(ctx, principal.account_id) == 10


def test_stale_attempt_cannot_finish_or_charge(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    stale = claim(ctx.db, "dead", 0.01, 3)
    time.sleep(0.05)
    fresh = claim(ctx.db, "w", 30, 3)
    ids = _file_ids(ctx, task_id)
    assert finish_task(ctx, stale, [_ok(ids[0])], {ids[0]: "x"}) is False
    assert finish_task(ctx, fresh, [_ok(ids[0])], {ids[0]: "x"}) is True
    assert finish_task(ctx, fresh, [_ok(ids[0])], {ids[0]: "x"}) is False
    assert keys.account_credits(ctx, principal.account_id) == 9


def test_reaper_fails_tasks_lost_on_their_last_attempt(ctx: Context, principal: Principal) -> None:
    """Failed, refunded, and what each dead attempt stored is deleted."""
    task_id = queued_task(ctx, principal)
    stored = []
    for _ in range(ctx.settings.max_attempts):
        held = claim(ctx.db, "dies", 0.01, ctx.settings.max_attempts)
        assert held is not None
        for folder in output_folders(principal.account_id, held):
            stored.append(f"{folder}/0.png")
            ctx.storage.write_stream(stored[-1], iter([b"half a batch"]), 100)
        time.sleep(0.03)
    assert reap_lost(ctx) == 1
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert row.status == "failed" and "interrupted 3 times" in row.error
    assert keys.account_credits(ctx, principal.account_id) == 10
    assert [key for key in stored if ctx.storage.size(key) is not None] == []


def test_reaper_spares_a_lease_renewed_since_it_looked(ctx: Context, principal: Principal) -> None:
    queued_task(ctx, principal)
    held = claim(ctx.db, "slow", 0.01, 1)
    assert held is not None
    time.sleep(0.03)  # expired: the reaper's query lists it...
    assert renew(ctx.db, held, 30)  # ...and the worker wakes up before its write
    assert not fail_task(ctx, held, "late", reaping_beyond=1)
    assert keys.account_credits(ctx, principal.account_id) == 9


def test_a_pending_task_beyond_a_lowered_limit_is_reaped(
    ctx: Context, principal: Principal
) -> None:
    """Handed back on attempt 2, then the operator restarts with at most 2:
    no worker would ever claim it, so it is failed and refunded."""
    task_id = queued_task(ctx, principal)
    for _ in range(2):
        held = claim(ctx.db, "w", 30, 3)
        assert held is not None and release(ctx.db, held)
    lowered = replace(ctx, settings=ctx.settings.model_copy(update={"max_attempts": 2}))
    assert claim(ctx.db, "w", 30, 2) is None
    assert reap_lost(lowered) == 1
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.status, row.error) == ("failed", "Processing was interrupted 2 times; giving up")
    assert keys.account_credits(ctx, principal.account_id) == 10
    assert reap_lost(ctx) == 0


def test_a_task_lost_on_its_only_attempt_says_once(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    assert claim(ctx.db, "dies", 0.01, 1) is not None
    time.sleep(0.03)
    assert reap_lost(replace(ctx, settings=ctx.settings.model_copy(update={"max_attempts": 1})))
    with ctx.db.begin() as conn:
        error = conn.execute(select(tasks.c.error).where(tasks.c.id == task_id)).scalar_one()
    assert error == "Processing was interrupted once; giving up"


def test_a_mass_loss_is_reaped_in_chunks(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of tasks lost at once (every worker gone) are read a chunk
    at a time, not held whole, and every one is still reaped in one call."""
    monkeypatch.setattr(results, "REAP_CHUNK", 2)
    read: list[int] = []
    real = results.lost_beyond_retry

    def counted(*args: object) -> list[tuple[str, str, int]]:
        lost = real(*args)  # type: ignore[arg-type]
        read.append(len(lost))
        return lost

    monkeypatch.setattr(results, "lost_beyond_retry", counted)
    task_ids = [queued_task(ctx, principal) for _ in range(5)]
    for _ in task_ids:
        assert claim(ctx.db, "dies", 0.01, 1) is not None
    time.sleep(0.03)
    once = replace(ctx, settings=ctx.settings.model_copy(update={"max_attempts": 1}))
    assert reap_lost(once) == 5
    assert read == [2, 2, 1]
    with ctx.db.begin() as conn:
        statuses = conn.execute(select(tasks.c.status).where(tasks.c.id.in_(task_ids))).scalars()
        assert set(statuses) == {"failed"}
    assert keys.account_credits(ctx, principal.account_id) == 10
