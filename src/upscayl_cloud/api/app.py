"""The composition root of the HTTP service: builds everything in lifespan.

Nothing is created at import time (settings, database engine, storage,
workers), so tests can build several apps with different settings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from upscayl_cloud import web
from upscayl_cloud.api import errors, redact
from upscayl_cloud.api.bodylimit import JsonBodyLimit
from upscayl_cloud.api.cors import ApiCors
from upscayl_cloud.api.ratelimit import RateLimits
from upscayl_cloud.api.requestid import RequestId
from upscayl_cloud.api.routes import (
    capabilities,
    history,
    objects,
    ops,
    tasks,
    uploads,
    with_upload_limit,
    without_validation_422,
)
from upscayl_cloud.config import Settings, StorageBackend, get_settings
from upscayl_cloud.services.context import build_context
from upscayl_cloud.services.metrics import Metrics
from upscayl_cloud.services.sweeper import Sweeper
from upscayl_cloud.worker import WorkerPool

log = logging.getLogger(__name__)

DESCRIPTION = (
    "API for Upscayl Cloud - An AI-powered image upscaling service. Use this API to upscale "
    "images, check processing status, and manage uploads."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact.install()
        # Not ``checks_store``: ``serve`` checked that its store is the
        # database's (cli/startup.open_context, in first_start_key) just
        # before building this app, where a refusal or a store down is one
        # line, not uvicorn's traceback; an app built here on a store that is
        # down answers 503 until it is back, as it always did.
        ctx = build_context(settings, records_secret=True)
        app.state.ctx = ctx
        app.state.rate_limits = RateLimits(settings)
        app.state.metrics = Metrics(ctx)
        pool = WorkerPool(ctx, settings.workers, app.state.metrics) if settings.workers else None
        app.state.workers = pool
        sweeper = Sweeper(ctx)
        sweeper.start()
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            sweeper.stop()
            if pool is not None:
                pool.stop(timeout=5)
            ctx.db.dispose()

    app = FastAPI(
        title="Upscayl Cloud API",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pull unpinned scripts from a CDN into the
        # web page's origin (where the page keeps the key), and fail offline;
        # the document itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
        # A trailing slash gets a 404 that names the right path
        # (errors._not_found_message), not a bare 307.
        redirect_slashes=False,
        openapi_tags=[
            {"name": "Upload", "description": "File upload operations"},
            {"name": "Tasks", "description": "Image processing task operations"},
            {"name": "History", "description": "Historical data operations"},
        ],
    )
    generate_document = app.openapi

    def openapi() -> dict[str, Any]:
        document = without_validation_422(generate_document())  # cached by FastAPI: once
        return with_upload_limit(document, settings.max_upload_bytes)

    app.openapi = openapi  # type: ignore[method-assign]
    errors.install(app)
    app.add_middleware(JsonBodyLimit)
    app.add_middleware(errors.AnswerUnexpected)
    if settings.cors_origin_list:
        # Outermost of the app's own layers, so refusals from inside (the
        # body cap, unexpected errors: api/cors.py) carry the headers a page
        # needs to read them.
        app.add_middleware(ApiCors, origins=settings.cors_origin_list)
    # Outermost: every answer carries it, and every line logged while serving.
    app.add_middleware(RequestId)
    app.include_router(uploads.router)
    app.include_router(history.router)
    app.include_router(tasks.router)
    app.include_router(ops.router)
    app.include_router(capabilities.router)
    if settings.storage_backend is StorageBackend.local:
        app.include_router(objects.router)
    web.install(app)
    return app
