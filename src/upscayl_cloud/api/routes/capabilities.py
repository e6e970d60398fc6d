# ruff: noqa: N815  (field names are camelCase JSON names, like the spec's)
"""What this server can do: models, scales, formats, face enhancement, limits.

Not in the spec, which has no way to ask. The web UI builds its option lists
and its client-side refusals from this answer (so they always match what
start-task accepts), and ``upscayl-cloud client models`` finds it through the
served OpenAPI document. Public and cheap: no rate limit, nothing heavy is
imported (face availability is a directory listing). With an ``X-API-Key``
it also returns the account's credits, which no spec operation reports; a
key that is sent must be valid (401 otherwise), so the UI uses this call to
check a pasted key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from upscayl_cloud.api.deps import ContextDep, api_key_header
from upscayl_cloud.api.ratelimit import RateLimits
from upscayl_cloud.api.routes import error_responses
from upscayl_cloud.engine import faces
from upscayl_cloud.engine.catalog import DEFAULT_MODEL, MODELS
from upscayl_cloud.engine.options import MAX_OUTPUT_EDGE, OUTPUT_FORMATS, SCALES
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.imagecheck import ALLOWED_TYPES
from upscayl_cloud.services.limits import image_limits

router = APIRouter(tags=["Capabilities"])


class ModelPublic(BaseModel):
    name: str
    title: str
    description: str


class QualityPublic(BaseModel):
    """Lossy formats' quality: set by the operator, not per request (the spec's
    ``compression`` field is commented out), so shown but not adjustable."""

    jpg: int
    webp: int
    adjustable: bool


class LimitsPublic(BaseModel):
    fileTypes: list[str]
    maxUploadBytes: int
    maxSourcePixels: int
    maxSourceEdge: int
    maxOutputPixels: int
    maxWebpOutputPixels: int
    maxOutputEdge: dict[str, int]
    maxFilesPerTask: int
    multipartThresholdBytes: int
    multipartPartBytes: int
    #: How long a download or thumbnail link lives (a page signs new ones after).
    downloadLinkSeconds: int


class RateLimitPublic(BaseModel):
    """An operation's limit per key: ``requests`` in any ``periodSeconds``."""

    requests: int
    periodSeconds: int


class AccountPublic(BaseModel):
    credits: int


class CapabilitiesData(BaseModel):
    models: list[ModelPublic]
    defaultModel: str
    scales: list[str]
    defaultScale: str
    formats: list[str]
    defaultFormat: str
    quality: QualityPublic
    faceEnhancement: bool
    faceEnhancementMessage: str | None = None
    creditsPerImage: int
    limits: LimitsPublic
    #: Absent where this server enforces none (``UPSCAYL_RATE_LIMITS_ENABLED``).
    rateLimits: dict[str, RateLimitPublic] | None = None
    account: AccountPublic | None = None


class CapabilitiesPublic(BaseModel):
    status: str = "success"
    data: CapabilitiesData


def _describe(ctx: Context) -> dict[str, Any]:
    settings = ctx.settings
    limits = image_limits(settings)
    faces_refused = faces.unavailable_reason(
        faces.models_dir(settings.data_dir), settings.face_model
    )
    return {
        "models": [
            {"name": m.name, "title": m.title, "description": m.description}
            for m in MODELS.values()
        ],
        "defaultModel": DEFAULT_MODEL,
        # Strings, as start-task's form takes them.
        "scales": [str(s) for s in SCALES],
        "defaultScale": "4",
        "formats": list(OUTPUT_FORMATS),
        "defaultFormat": "jpg",
        "quality": {
            "jpg": settings.jpeg_quality,
            "webp": settings.webp_quality,
            "adjustable": False,
        },
        "faceEnhancement": faces_refused is None,
        "faceEnhancementMessage": faces_refused,
        "creditsPerImage": settings.credits_per_image,
        "limits": {
            "fileTypes": list(ALLOWED_TYPES),
            "maxUploadBytes": settings.max_upload_bytes,
            "maxSourcePixels": limits.max_source_pixels,
            "maxSourceEdge": limits.max_source_edge,
            "maxOutputPixels": limits.max_output_pixels,
            "maxWebpOutputPixels": limits.max_webp_output_pixels,
            "maxOutputEdge": dict(MAX_OUTPUT_EDGE),
            "maxFilesPerTask": settings.max_files_per_task,
            "multipartThresholdBytes": settings.multipart_threshold_bytes,
            "multipartPartBytes": settings.multipart_part_bytes,
            "downloadLinkSeconds": settings.download_url_ttl_seconds,
        },
    }


def _describe_for(ctx: Context, key: str | None) -> dict[str, Any]:
    data = _describe(ctx)
    if key is not None:
        principal = keys.authenticate(ctx, key)
        data["account"] = {"credits": keys.account_credits(ctx, principal.account_id)}
    return data


@router.get(
    "/capabilities",
    operation_id="getCapabilities",
    summary="Server Capabilities",
    description="Models, scales, formats, face enhancement and limits of this server; "
    "with an X-API-Key, also the account's remaining credits.",
    response_model=CapabilitiesPublic,
    response_model_exclude_none=True,
    responses=error_responses(401, 500),
)
async def get_capabilities(
    request: Request, ctx: ContextDep, key: Annotated[str | None, Depends(api_key_header)]
) -> dict[str, Any]:
    data = await run_in_threadpool(_describe_for, ctx, key)
    # The limits the app enforces, as it parsed them: a client polling many
    # tasks paces itself by get-task-status's.
    limits: RateLimits = request.app.state.rate_limits
    data["rateLimits"] = limits.published()
    return {"status": "success", "data": data}
