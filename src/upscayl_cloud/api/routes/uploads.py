"""Upload tag: pre-signed upload URLs and multipart completion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from upscayl_cloud.api.deps import BaseUrlDep, ContextDep, limited
from upscayl_cloud.api.routes import error_responses
from upscayl_cloud.api.schemas import (
    MultipartCompletionCreate,
    MultipartDonePublic,
    UploadUrlCreate,
    UploadUrlPublic,
)
from upscayl_cloud.services import uploads
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.storage.base import CompletedPart

router = APIRouter(tags=["Upload"])


@router.post(
    "/get-upload-url",
    operation_id="getUploadUrl",
    summary="Generate Pre-signed Upload URL",
    response_model=UploadUrlPublic,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 429, 500),
    openapi_extra={"x-rateLimit": {"requests": 100, "period": "1 hour"}},
)
def get_upload_url(
    body: Annotated[UploadUrlCreate, Body()],
    ctx: ContextDep,
    base_url: BaseUrlDep,
    principal: Annotated[Principal, Depends(limited("get-upload-url"))],
) -> dict[str, Any]:
    link = uploads.request_upload(
        ctx,
        principal,
        base_url,
        body.originalFileName,
        body.fileType,
        body.fileSize,
        body.multipart,
    )
    data: dict[str, Any] = {
        "uploadURL": link.upload_url,
        "fileName": link.file_name,
        "fileType": link.file_type,
        "fileSize": link.file_size,
        "originalFileName": link.original_file_name,
        "createdAt": link.created_at,
        "expiresAt": link.expires_at,
    }
    if link.upload_id:
        data |= {
            "uploadId": link.upload_id,
            "key": link.key,
            "partSize": link.part_size,
            "parts": [{"partNumber": p.part_number, "uploadURL": p.upload_url} for p in link.parts],
        }
    return {"status": "success", "data": data}


@router.post(
    "/complete-multipart-upload",
    operation_id="completeMultipartUpload",
    summary="Complete Multipart Upload",
    response_model=MultipartDonePublic,
    responses=error_responses(400, 401, 429, 500),
    openapi_extra={"x-rateLimit": {"requests": 50, "period": "1 hour"}},
)
def complete_multipart_upload(
    body: Annotated[MultipartCompletionCreate, Body()],
    ctx: ContextDep,
    principal: Annotated[Principal, Depends(limited("complete-multipart-upload"))],
) -> dict[str, Any]:
    data = body.data
    parts = [CompletedPart(p.PartNumber, p.ETag) for p in data.parts]
    uploads.complete_multipart(ctx, principal, data.uploadId, data.key, parts)
    return {"status": "success", "data": {"status": "success"}}
