"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from upscayl_cloud.api.deps import ContextDep
from upscayl_cloud.api.errors import error_response
from upscayl_cloud.api.readiness import readiness

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process answers: nothing more is checked. On the event loop, not
    the request threads, which a hung database or store can all hold."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, ctx: ContextDep) -> Any:
    """Database reachable, storage writable, and this process's workers
    alive where it has any: an API-only process (``--workers 0``) reports
    no workers check rather than a ``true`` it never checked (worker
    processes are seen through ``upscayl_queue_depth``).

    ``rateLimits`` says whether the last request's limits were counted; it
    is no check: requests pass while Redis fails (by design), so a process
    should not leave the balancer for it, but its operator should see it."""
    checks = await readiness(request.app.state, ctx).checks()
    pool = getattr(request.app.state, "workers", None)
    if pool is not None:
        checks["workers"] = pool.alive()
    if all(checks.values()):
        ready: dict[str, Any] = {"status": "ready", "checks": checks}
        limits = getattr(request.app.state, "rate_limits", None)
        if limits is not None:
            ready["rateLimits"] = limits.status
        return ready
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    return error_response(503, "NOT_READY", f"Not ready: {failing}")


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
