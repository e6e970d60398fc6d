"""``upscayl-cloud serve``: the whole embedded stack in one process.

Zero configuration: the data directory, database (migrated), storage folder
and workers are set up on start. On the very first start a key is created
and printed once, with the URL to use it against.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from upscayl_cloud.config import Settings, get_settings
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import build_context


def first_start_key(settings: Settings) -> str | None:
    """Create a key if none exists yet; returns it (shown once) or None."""
    ctx = build_context(settings)
    try:
        if not settings.create_first_key or keys.count_keys(ctx) > 0:
            return None
        key, _info = keys.create_key(ctx, "first key", settings.first_key_credits)
        return key
    finally:
        ctx.db.dispose()


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on.")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker threads (0: API only).", min=0)
    ] = None,
) -> None:
    """Run the API, its workers and the retention sweeper."""
    import uvicorn

    from upscayl_cloud.api.app import create_app

    overrides = {
        name: value
        for name, value in (("host", host), ("port", port), ("workers", workers))
        if value is not None
    }
    settings = get_settings().model_copy(update=overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    url = settings.public_url or f"http://{settings.host}:{settings.port}"
    key = first_start_key(settings)
    if key is not None:
        typer.echo(f"First start: created an API key with {settings.first_key_credits} credits.")
        typer.echo("It is shown only this once; keep it somewhere safe:")
        typer.echo(f"  X-API-Key: {key}")
        typer.echo(f"  API: {url}")
    typer.echo(f"Serving the Upscayl Cloud API on {url} (data: {settings.data_dir.resolve()})")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
