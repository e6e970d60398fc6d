"""Dependencies shared by the routes: the context, the caller, the rate limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from upscayl_cloud.api.ratelimit import RateLimits
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal, authenticate

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyAuth")


def get_context(request: Request) -> Context:
    return request.app.state.ctx


ContextDep = Annotated[Context, Depends(get_context)]


async def get_principal(
    ctx: ContextDep, key: Annotated[str | None, Depends(api_key_header)]
) -> Principal:
    return await run_in_threadpool(authenticate, ctx, key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def limited(operation: str) -> Callable[..., Principal]:
    """The caller, after counting this request against their limit for ``operation``."""

    def dependency(request: Request, response: Response, principal: PrincipalDep) -> Principal:
        limits: RateLimits = request.app.state.rate_limits
        headers, refusal = limits.check(operation, principal.key_id)
        request.state.rate_headers = headers
        if refusal is not None:
            raise refusal
        response.headers.update(headers)
        return principal

    return dependency


def base_url(request: Request, ctx: ContextDep) -> str:
    """Where signed links point: the configured public URL, or this request's host."""
    return ctx.settings.public_url or str(request.base_url).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]
