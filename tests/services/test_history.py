"""History filters and timestamp paging."""

from __future__ import annotations

from support.context import new_principal
from support.tasks import queued_task
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import NotFoundError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.results import fail_task
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
