"""Reporting tasks: one task's status, and an account's history page by page.

History is newest first. ``timestampOffset`` is an exclusive upper bound on
``createdAt``: a page holds tasks created strictly before it, and
``nextOffset`` is the ``createdAt`` of the page's last (oldest) task. Task
timestamps are strictly increasing per account (see ``services/tasks.py``),
so following ``nextOffset`` visits every task exactly once, even while new
tasks arrive (they are newer than any offset already handed out).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Row, func, select

from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import NotFoundError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.uploads import safe_base_name

RESULT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def _processed_file(ctx: Context, base_url: str, row: Row) -> dict[str, Any]:
    """Every ProcessedFile field, with fresh signed links capped at the object's expiry.

    Past ``expiresAt`` the result is deleted (or about to be): the file is
    still listed, as history, but without links. Links that expired on
    arrival sent clients round a loop: 410, "call get-task-status for
    fresh links", another expired link."""
    now = now_ms()
    link_expiry = min(row.expires_at, now + ctx.settings.download_url_ttl_seconds * 1000)
    # Rows recorded before names were made safe at finish time are made safe here.
    name = safe_base_name(row.processed_file_name) if row.processed_file_name else None
    links = {}
    if row.expires_at > now:
        links = {
            "downloadLink": ctx.storage.presign_get(base_url, row.result_key, link_expiry, name),
            "thumbnailLink": ctx.storage.presign_get(base_url, row.thumbnail_key, link_expiry),
        }
    return {
        "fileName": row.file_name,
        "fileType": row.file_type,
        "path": row.result_key,
        "createdAt": row.completed_at,
        "expiresAt": row.expires_at,
        "originalFileName": row.original_file_name,
        "fileSize": row.file_size,
        "finalFileSize": row.final_file_size,
        "processedFileName": name,
        "dimensions": {"width": row.width, "height": row.height},
        **links,
    }


def _files_of(
    ctx: Context, conn: Connection, base_url: str, task_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The delivered files of every task in ``task_ids``, by task: one query
    for a whole history page, not one per task (on PostgreSQL each is a round
    trip; bench/README.md, "API requests")."""
    files: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in task_ids}
    if not task_ids:
        return files
    rows = conn.execute(
        select(task_files)
        .where(task_files.c.task_id.in_(task_ids), task_files.c.status == "completed")
        .order_by(task_files.c.task_id, task_files.c.position)
    ).all()
    for row in rows:
        files[row.task_id].append(_processed_file(ctx, base_url, row))
    return files


def _task_dict(task: Row, files: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskId": task.id,
        "createdAt": task.created_at,
        "batchMode": bool(task.batch_mode),
        "enhanceFace": bool(task.enhance_face),
        "files": files,
        "model": task.model,
        "progress": str(task.progress),
        "scale": str(task.scale),
        "status": task.status,
        "saveImageAs": task.save_image_as,
        "creditsDeducted": task.credits_charged > 0,
        "deductedCredits": task.credits_charged,
    }
    if task.error:
        data["error"] = task.error
    return data


def canonical_task_id(task_id: str) -> str | None:
    """The stored form of a client's task id, or None when it is no UUID.

    Ids are stored as ``str(uuid4())`` (lower case, hyphenated); a client may
    send the same UUID in upper case, which must find the same task.
    """
    try:
        return str(uuid.UUID(task_id))
    except (ValueError, AttributeError, TypeError):
        return None


def task_status(ctx: Context, principal: Principal, base_url: str, task_id: str) -> dict[str, Any]:
    canonical = canonical_task_id(task_id)
    if canonical is None:
        raise NotFoundError("Task not found")
    with reading(ctx.db) as conn:
        task = conn.execute(
            select(tasks).where(tasks.c.id == canonical, tasks.c.account_id == principal.account_id)
        ).first()
        if task is None:
            raise NotFoundError("Task not found")
        return _task_dict(task, _files_of(ctx, conn, base_url, [task.id])[task.id])


def history(
    ctx: Context,
    principal: Principal,
    base_url: str,
    *,
    timestamp_offset: int | None = None,
    batch: bool | None = None,
    failed: bool | None = None,
    status: str | None = None,
    limit: int = 20,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of the caller's tasks and its pagination block."""
    conditions = [tasks.c.account_id == principal.account_id]
    if batch is not None:
        conditions.append(tasks.c.batch_mode == batch)
    if failed is True:
        conditions.append(tasks.c.status == "failed")
    elif failed is False:
        conditions.append(tasks.c.status != "failed")
    if status is not None:
        conditions.append(tasks.c.status == status)
    page_conditions = list(conditions)
    if timestamp_offset is not None:
        page_conditions.append(tasks.c.created_at < timestamp_offset)
    with reading(ctx.db) as conn:
        total = conn.execute(
            select(func.count()).select_from(tasks).where(*conditions)
        ).scalar_one()
        rows = conn.execute(
            select(tasks)
            .where(*page_conditions)
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .limit(limit + 1)
        ).all()
        has_more = len(rows) > limit
        rows = rows[:limit]
        files = _files_of(ctx, conn, base_url, [row.id for row in rows])
        items = [_task_dict(row, files[row.id]) for row in rows]
    pagination: dict[str, Any] = {"total": int(total), "hasMore": has_more}
    if has_more and rows:
        pagination["nextOffset"] = rows[-1].created_at
    return items, pagination
