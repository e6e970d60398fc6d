"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from upscayl_cloud.api.deps import ContextDep
from upscayl_cloud.api.errors import error_response
from upscayl_cloud.services.context import Context

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

#: What the shared probe checks, in order; one not answered in time fails.
PROBED = ("database", "storage")


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """The process answers: nothing more is checked."""
    return {"status": "ok"}


def _probe(ctx: Context, results: dict[str, bool]) -> None:
    """Fill ``results`` check by check, so a caller that stops waiting still
    knows which checks answered (and which one hangs)."""
    try:
        with ctx.db.connect() as conn:
            conn.execute(text("SELECT 1"))
        results["database"] = True
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        results["database"] = False
    try:
        ctx.storage.write_stream("health/probe", iter([b"ok"]), 16)
        results["storage"] = True
    except Exception as exc:
        log.warning("readiness: storage check failed: %s", exc)
        results["storage"] = False


class Readiness:
    """The last probe's result, reused for ``cache_seconds``, and at most one
    probe in flight, shared by every caller.

    ``/readyz`` needs no key, and a probe per call against a slow store held
    one API thread each until the store timed out: 45 callers starved
    get-task-status and /healthz. The probe runs on its own thread; callers
    wait on the event loop (no thread each) for at most ``timeout_seconds``.
    """

    def __init__(self, ctx: Context, cache_seconds: float, timeout_seconds: float) -> None:
        self.ctx = ctx
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._last: tuple[float, dict[str, bool]] | None = None
        self._in_flight: asyncio.Future[dict[str, bool]] | None = None
        self._results: dict[str, bool] = {}

    async def checks(self) -> dict[str, bool]:
        """Database and storage checks: cached, shared, or probed now."""
        last = self._last
        if last is not None and time.monotonic() - last[0] < self._cache_seconds:
            return dict(last[1])
        future = self._in_flight or self._start()
        try:
            return dict(await asyncio.wait_for(asyncio.shield(future), self._timeout_seconds))
        except TimeoutError:
            answered = dict(self._results)
            return {name: answered.get(name, False) for name in PROBED}

    def _start(self) -> asyncio.Future[dict[str, bool]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, bool]] = loop.create_future()
        results: dict[str, bool] = {}
        self._in_flight, self._results = future, results

        def run() -> None:
            try:
                _probe(self.ctx, results)
            finally:
                loop.call_soon_threadsafe(self._finish, future, results)

        threading.Thread(target=run, name="readiness-probe", daemon=True).start()
        return future

    def _finish(self, future: asyncio.Future[dict[str, bool]], results: dict[str, bool]) -> None:
        """On the event loop: publish the result and let the next call probe anew."""
        checks = {name: results.get(name, False) for name in PROBED}
        self._last = (time.monotonic(), checks)
        self._in_flight = None
        if not future.done():
            future.set_result(checks)


def _readiness(request: Request, ctx: Context) -> Readiness:
    """One per app, made on first use (always on the event loop: no race)."""
    readiness = getattr(request.app.state, "readiness", None)
    if readiness is None or readiness.ctx is not ctx:
        settings = ctx.settings
        readiness = Readiness(
            ctx, settings.readiness_cache_seconds, settings.readiness_timeout_seconds
        )
        request.app.state.readiness = readiness
    return readiness


@router.get("/readyz", response_model=None)
async def readyz(request: Request, ctx: ContextDep) -> Any:
    """Database reachable, storage writable, workers alive."""
    checks = await _readiness(request, ctx).checks()
    pool = getattr(request.app.state, "workers", None)
    checks["workers"] = pool is None or pool.alive()
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    return error_response(503, "NOT_READY", f"Not ready: {failing}")


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
