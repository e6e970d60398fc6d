"""Creating real queued tasks for queue and service tests."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, insert

from support.images import png_bytes
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import accounts
from upscayl_cloud.db.tables import tasks as tasks_table
from upscayl_cloud.services import tasks, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.tasks import TaskOptions


def uploaded(ctx: Context, who: Principal, data: bytes | None = None) -> str:
    data = data or png_bytes()
    link = uploads.request_upload(ctx, who, "http://x", "a.png", "image/png", len(data))
    key = uploads.storage_key(who.account_id, link.file_name)
    ctx.storage.write_stream(key, iter([data]), 10**9)
    return link.file_name


def queued_task(ctx: Context, who: Principal, files: int = 1, **options: object) -> str:
    names = [uploaded(ctx, who) for _ in range(files)]
    opts = TaskOptions(**options)  # type: ignore[arg-type]
    return tasks.start_task(ctx, who, opts, [{"fileName": n} for n in names])


def bare_tasks(db: Engine, count: int) -> list[str]:
    """``count`` pending task rows with no files, for queue-only tests: one
    account, one row each, inserted in one transaction (oldest first)."""
    now = now_ms()
    account = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with db.begin() as conn:
        conn.execute(
            insert(accounts).values(
                id=account, name="queue", credits=0, created_at=now, last_task_at=now
            )
        )
        conn.execute(
            insert(tasks_table),
            [
                {
                    "id": task_id,
                    "account_id": account,
                    "status": "pending",
                    "model": "quick-clear-4x",
                    "scale": 2,
                    "save_image_as": "png",
                    "enhance_face": False,
                    "batch_mode": False,
                    "credits_reserved": 0,
                    "created_at": now + n,
                    "updated_at": now + n,
                }
                for n, task_id in enumerate(ids)
            ],
        )
    return ids
