"""Creating real queued tasks for queue and service tests."""

from __future__ import annotations

from support.images import png_bytes
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
