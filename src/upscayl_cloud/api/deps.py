"""Dependencies shared by the routes: the context, the caller, the rate limit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from upscayl_cloud.api.ratelimit import RateLimits
from upscayl_cloud.config import SPEC_RATE_LIMITS
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import ServiceError
from upscayl_cloud.services.keys import Principal, authenticate

log = logging.getLogger(__name__)

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


async def count_unread(request: Request) -> Exception | None:
    """Authenticate and count a request refused before its dependencies ran.

    FastAPI parses a JSON body before it solves the route's dependencies,
    so a body that is not JSON (or too large, too deep, not UTF-8) would be
    answered 400 by someone never asked for a key, and never counted: a
    client looping on a broken body would never meet its limit, against
    docs/api.md ("What counts"). Returns the error that takes the 400's
    place (401 without a valid key, 429 over the limit), or None. A
    database that cannot answer leaves the 400 as it was: it is true, and
    the next request will be counted.
    """
    if hasattr(request.state, "rate_headers"):  # counted by ``limited`` already
        return None
    operation = request.url.path.removeprefix("/")
    if operation not in SPEC_RATE_LIMITS:
        return None
    try:
        key = request.headers.get(api_key_header.model.name)
        principal = await run_in_threadpool(authenticate, request.app.state.ctx, key)
    except ServiceError as exc:
        return exc
    except Exception as exc:
        log.warning("a refused %s was not counted: %s", operation, exc)
        return None
    limits: RateLimits = request.app.state.rate_limits
    # A thread, as for ``limited``: with Redis the count is a network call.
    headers, refusal = await run_in_threadpool(limits.check, operation, principal.key_id)
    request.state.rate_headers = headers
    return refusal


def base_url(request: Request, ctx: ContextDep) -> str:
    """Where signed links point: the configured public URL, or this request's host."""
    return ctx.settings.public_url or str(request.base_url).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]
