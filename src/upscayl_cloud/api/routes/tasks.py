"""Tasks tag: start a task (multipart/form-data) and report its status."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool

from upscayl_cloud.api.deps import BaseUrlDep, ContextDep, limited
from upscayl_cloud.api.form import START_TASK_BODY, parse_start_task
from upscayl_cloud.api.routes import error_responses
from upscayl_cloud.api.schemas import TaskStartedPublic, TaskStatusPublic, TaskStatusQuery
from upscayl_cloud.services import status, tasks, uploads
from upscayl_cloud.services.errors import ServiceError
from upscayl_cloud.services.keys import Principal

log = logging.getLogger(__name__)
router = APIRouter(tags=["Tasks"])


@router.post(
    "/get-task-status",
    operation_id="getTaskStatus",
    summary="Check Task Status",
    response_model=TaskStatusPublic,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 404, 429, 500),
    openapi_extra={"x-rateLimit": {"requests": 100, "period": "1 hour"}},
)
def get_task_status(
    body: Annotated[TaskStatusQuery, Body()],
    ctx: ContextDep,
    base_url: BaseUrlDep,
    principal: Annotated[Principal, Depends(limited("get-task-status"))],
) -> dict[str, Any]:
    return {"status": "success", "data": status.task_status(ctx, principal, base_url, body.taskId)}


@router.post(
    "/start-task",
    operation_id="startTask",
    summary="Start Task",
    response_model=TaskStartedPublic,
    responses=error_responses(400, 401, 402, 429, 500),
    openapi_extra={
        "requestBody": START_TASK_BODY,
        "x-rateLimit": {"requests": 50, "period": "1 hour"},
    },
)
async def start_task(
    request: Request,
    ctx: ContextDep,
    principal: Annotated[Principal, Depends(limited("start-task"))],
) -> dict[str, Any]:
    # Every task costs at least one image: an account that cannot pay for one
    # is refused before its body (up to 100 MB of direct upload) is read.
    await run_in_threadpool(tasks.check_affordable, ctx, principal, 1)
    form = await parse_start_task(request, ctx.settings)
    try:
        entries = list(form.files)
        direct_name = None
        if form.direct is not None:
            direct_name = await run_in_threadpool(
                uploads.save_direct,
                ctx,
                principal,
                form.direct.filename,
                form.direct.mime_type,
                form.direct.chunks(),
            )
            entries = [{"fileName": direct_name}]
        try:
            task_id = await run_in_threadpool(
                tasks.start_task, ctx, principal, form.options, entries
            )
        except Exception as exc:
            # Refused, or the database or store failed (503): the caller will
            # send the file again, and this copy would only count against
            # the pending cap until it expired. After an outage, only if no
            # task names it: the commit may have landed with its answer
            # lost. Best effort: what stays is swept at its expiry.
            if direct_name is not None:
                refused = isinstance(exc, ServiceError) and exc.status_code < 500
                try:
                    await run_in_threadpool(
                        uploads.discard, ctx, principal, direct_name, unless_named=not refused
                    )
                except Exception as failure:
                    log.warning("direct upload %s left for the sweeper: %s", direct_name, failure)
            raise
    finally:
        await form.close()
    return {
        "status": "success",
        "data": {"taskId": task_id, "message": "Task request sent successfully"},
    }
