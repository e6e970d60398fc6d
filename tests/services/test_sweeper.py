"""Retention: expired originals and results are deleted; queued inputs are kept."""

from __future__ import annotations

from sqlalchemy import select, update

from support.tasks import queued_task, uploaded
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import task_files, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.sweeper import sweep
from upscayl_cloud.services.uploads import storage_key


def test_expired_upload_is_deleted_unless_a_task_waits_for_it(
    ctx: Context, principal: Principal
) -> None:
    loose = uploaded(ctx, principal)
    task_id = queued_task(ctx, principal)
    with ctx.db.begin() as conn:
        conn.execute(update(uploads).values(expires_at=now_ms() - 1))
        needed = conn.execute(
            select(task_files.c.file_name).where(task_files.c.task_id == task_id)
        ).scalar_one()
    report = sweep(ctx)
    assert report.uploads_deleted == 1
    assert ctx.storage.size(storage_key(principal.account_id, loose)) is None
    assert ctx.storage.size(storage_key(principal.account_id, needed)) is not None


def test_expired_results_are_deleted(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    ctx.storage.write_stream("results/a/t/1/0.png", iter([b"x"]), 10)
    with ctx.db.begin() as conn:
        conn.execute(
            update(task_files)
            .where(task_files.c.task_id == task_id)
            .values(result_key="results/a/t/1/0.png", expires_at=now_ms() - 1)
        )
    assert sweep(ctx).results_deleted == 1
    assert ctx.storage.size("results/a/t/1/0.png") is None
    assert sweep(ctx).results_deleted == 0
