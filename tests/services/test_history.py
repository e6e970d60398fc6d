"""History filters and timestamp paging."""

from __future__ import annotations

from sqlalchemy import event, select, update

from support.context import new_principal
from support.tasks import queued_task
from upscayl_cloud.db.tables import task_files
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import NotFoundError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.results import FileOutcome, fail_task, finish_task
from upscayl_cloud.services.status import history, task_status


def test_paging_visits_every_task_once_newest_first(ctx: Context, principal: Principal) -> None:
    created = [queued_task(ctx, principal) for _ in range(7)]
    seen: list[str] = []
    offset = None
    while True:
        items, page = history(ctx, principal, "http://x", timestamp_offset=offset, limit=3)
        assert page["total"] == 7
        seen += [item["taskId"] for item in items]
        if not page["hasMore"]:
            assert "nextOffset" not in page
            break
        offset = page["nextOffset"]
        assert offset == items[-1]["createdAt"]
    assert seen == list(reversed(created))


def test_filters(ctx: Context, principal: Principal) -> None:
    single = queued_task(ctx, principal)
    batch = queued_task(ctx, principal, files=2)
    failed = queued_task(ctx, principal)
    held = claim(ctx.db, "w", 30, 3)
    while held.task_id != failed:
        held = claim(ctx.db, "w", 30, 3)
    fail_task(ctx, held, "boom")

    def ids(**filters: object) -> set[str]:
        return {i["taskId"] for i in history(ctx, principal, "http://x", **filters)[0]}

    assert ids(batch=True) == {batch}
    assert ids(batch=False) == {single, failed}
    assert ids(failed=True) == {failed}
    assert ids(failed=False) == {single, batch}
    assert ids(status="failed") == {failed}
    assert single in ids(status="processing") | ids(status="pending")


def test_other_accounts_task_is_not_found(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    _key, other = new_principal(ctx, name="other")
    assert task_status(ctx, principal, "http://x", task_id)["status"] == "pending"
    try:
        task_status(ctx, other, "http://x", task_id)
    except NotFoundError:
        pass
    else:
        raise AssertionError("another account's task must be 404")
    assert history(ctx, other, "http://x")[1]["total"] == 0


def _delivered(task_id: str, file_id: int, position: int) -> FileOutcome:
    name = f"r/{task_id}/{position}.png"
    return FileOutcome(file_id, True, None, name, "t/x.webp", "a.png", "image/png", 10, 4, 4)


def test_a_page_lists_each_tasks_own_files_in_order_in_constant_queries(
    ctx: Context, principal: Principal
) -> None:
    """Files are read for the whole page at once: the statements a page
    sends do not grow with its tasks (each is a round trip on PostgreSQL)."""
    principal = new_principal(ctx, credits=50, name="batches")[1]
    created = [queued_task(ctx, principal, files=n % 3 + 1) for n in range(6)]
    for _ in created:
        held = claim(ctx.db, "w", 30, 3)
        with ctx.db.begin() as conn:
            ids = conn.execute(
                select(task_files.c.id, task_files.c.position)
                .where(task_files.c.task_id == held.task_id)
                .order_by(task_files.c.position)
            ).all()
        outcomes = [_delivered(held.task_id, row.id, row.position) for row in ids]
        assert finish_task(ctx, held, outcomes, {row.id: "f" for row in ids})

    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    def page(limit: int) -> list[dict[str, object]]:
        statements.clear()
        event.listen(ctx.db, "before_cursor_execute", count)
        try:
            return history(ctx, principal, "http://x", limit=limit)[0]
        finally:
            event.remove(ctx.db, "before_cursor_execute", count)

    items = page(6)
    assert [item["taskId"] for item in items] == list(reversed(created))
    for item, n in zip(items, reversed(range(6)), strict=True):
        paths = [f["path"] for f in item["files"]]
        assert paths == [f"r/{item['taskId']}/{p}.png" for p in range(n % 3 + 1)]
    assert len(page(1)) == 1
    few = len(statements)
    page(6)
    assert len(statements) == few
    alone = task_status(ctx, principal, "http://x", created[2])["files"]
    assert [f["path"] for f in alone] == [f["path"] for f in items[3]["files"]]


def test_a_result_past_its_expiry_is_listed_without_links(
    ctx: Context, principal: Principal
) -> None:
    """Links capped at an expiry already past would be dead on arrival (410,
    "ask get-task-status for fresh links", another dead link...)."""
    task_id = queued_task(ctx, principal, files=2)
    held = claim(ctx.db, "w", 30, 3)
    with ctx.db.begin() as conn:
        ids = (
            conn.execute(
                select(task_files.c.id).where(task_files.c.task_id == task_id).order_by("position")
            )
            .scalars()
            .all()
        )
    result = ("a_upscayl.png", "image/png", 10, 4, 4)
    done = [FileOutcome(i, True, None, f"r/{i}.png", f"t/{i}.webp", *result) for i in ids]
    assert finish_task(ctx, held, done, {i: "x" for i in ids})
    with ctx.db.begin() as conn:
        conn.execute(update(task_files).where(task_files.c.id == ids[0]).values(expires_at=1))
    expired, live = task_status(ctx, principal, "http://x", task_id)["files"]
    assert "downloadLink" not in expired and "thumbnailLink" not in expired
    assert (expired["expiresAt"], expired["dimensions"]) == (1, {"width": 4, "height": 4})
    assert live["downloadLink"].startswith("http://x/") and live["thumbnailLink"]
