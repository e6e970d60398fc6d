"""History tag: an account's tasks, newest first, paged by timestamp."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from upscayl_cloud.api.deps import BaseUrlDep, ContextDep, limited
from upscayl_cloud.api.routes import error_responses
from upscayl_cloud.api.schemas import HistoryPublic, HistoryQuery
from upscayl_cloud.services import status
from upscayl_cloud.services.keys import Principal

router = APIRouter(tags=["History"])


@router.post(
    "/get-upscayl-history",
    operation_id="getUpscaylHistory",
    summary="Get Image Processing History",
    response_model=HistoryPublic,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 404, 429, 500),
    openapi_extra={"x-rateLimit": {"requests": 100, "period": "1 hour"}},
)
def get_upscayl_history(
    ctx: ContextDep,
    base_url: BaseUrlDep,
    principal: Annotated[Principal, Depends(limited("get-upscayl-history"))],
    query: Annotated[HistoryQuery, Body()],
) -> dict[str, Any]:
    """The spec marks the body required, and every other JSON operation
    refuses a missing one: ``{}`` asks for the first page unfiltered."""
    items, pagination = status.history(
        ctx,
        principal,
        base_url,
        timestamp_offset=query.timestampOffset,
        batch=query.batch,
        failed=query.failed,
        status=query.processed,
        limit=query.limit,
    )
    return {"status": "success", "pagination": pagination, "data": items}
