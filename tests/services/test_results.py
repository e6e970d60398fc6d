"""Outcome recording: credits captured once, released for failures, fenced by attempt."""

from __future__ import annotations

import time
from dataclasses import replace

from sqlalchemy import select

from support.tasks import queued_task
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.results import FileOutcome, finish_task, reap_lost


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


def test_partial_batch_charges_only_successes(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal, files=3)
    held = claim(ctx.db, "w", 30, 3)
    ids = _file_ids(ctx, task_id)
    outcomes = [_ok(ids[0]), FileOutcome(ids[1], False, "corrupt"), _ok(ids[2])]
    assert finish_task(ctx, held, outcomes, {i: f"'f{i}'" for i in ids})
    assert keys.account_credits(ctx, principal.account_id) == 10 - 2
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.status, row.credits_charged, row.progress) == ("completed", 2, 100)
    assert "1 of 3 files failed" in row.error and "corrupt" in row.error


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
    task_id = queued_task(ctx, principal)
    for _ in range(ctx.settings.max_attempts):
        assert claim(ctx.db, "dies", 0.01, ctx.settings.max_attempts) is not None
        time.sleep(0.03)
    assert reap_lost(ctx) == 1
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert row.status == "failed" and "interrupted 3 times" in row.error
    assert keys.account_credits(ctx, principal.account_id) == 10


def test_a_task_lost_on_its_only_attempt_says_once(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    assert claim(ctx.db, "dies", 0.01, 1) is not None
    time.sleep(0.03)
    assert reap_lost(replace(ctx, settings=ctx.settings.model_copy(update={"max_attempts": 1})))
    with ctx.db.begin() as conn:
        error = conn.execute(select(tasks.c.error).where(tasks.c.id == task_id)).scalar_one()
    assert error == "Processing was interrupted once; giving up"
