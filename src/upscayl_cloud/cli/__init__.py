"""The ``upscayl-cloud`` command: one Typer app, one module per command group.

Every command honours ``UPSCAYL_DATA_DIR`` (default ``./data``).
"""

from __future__ import annotations

import typer

from upscayl_cloud.cli import client, keys, models, serve, upscale

app = typer.Typer(
    name="upscayl-cloud",
    help="Self-hostable Upscayl Cloud API: AI image upscaling as a service.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """Self-hostable Upscayl Cloud API: AI image upscaling as a service."""


serve.register(app)
keys.register(app)
upscale.register(app)
models.register(app)
client.register(app)
