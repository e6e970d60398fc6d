"""The ``upscayl-cloud`` command: one Typer app, one module per command group.

Every command honours ``UPSCAYL_DATA_DIR`` (default ``./data``).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from upscayl_cloud.cli import client, keys, models, serve, upscale
from upscayl_cloud.cli.help import HELP_MARKUP
from upscayl_cloud.config import Settings, get_settings

app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    name="upscayl-cloud",
    help="Self-hostable Upscayl Cloud API: AI image upscaling as a service.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"upscayl-cloud {version('upscayl-cloud')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Self-hostable Upscayl Cloud API: AI image upscaling as a service."""
    # Read the settings before any command runs, so a bad UPSCAYL_* value is
    # one line naming the variable, not a traceback from wherever it is first
    # used. The client commands talk to a server and use none of them.
    if ctx.invoked_subcommand != "client":
        try:
            get_settings()
        except (ValidationError, SettingsError) as exc:
            for line in setting_errors(exc):
                typer.echo(line, err=True)
            raise typer.Exit(2) from None
        except (UnicodeDecodeError, OSError) as exc:  # the .env file, read with them
            typer.echo(env_file_error(exc), err=True)
            raise typer.Exit(2) from None


#: Settings whose value may hold a password (a URL's user part among them):
#: named, never repeated.
_NOT_ECHOED = {
    "database_url",
    "secret_keys",
    "s3_secret_access_key",
    "rate_limit_storage_uri",
    "public_url",
    "s3_endpoint_url",
    "s3_public_endpoint_url",
}


def setting_errors(exc: ValidationError | SettingsError) -> list[str]:
    """One line per invalid setting, named as it is set: ``UPSCAYL_<NAME>``."""
    if isinstance(exc, SettingsError):  # a JSON value that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"UPSCAYL_{field.group(1).upper()}" if field else "a setting"
        return [f"Invalid setting {name}: not valid JSON ({exc.__cause__ or exc})"]
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            name = f"UPSCAYL_{field.upper()}"
            if field in _NOT_ECHOED:
                lines.append(f"Invalid setting {name}: {message}")
            else:
                lines.append(f"Invalid setting {name}={error['input']!r}: {message}")
        else:
            lines.append(f"Invalid settings: {message}")
    return lines


def env_file_error(exc: UnicodeDecodeError | OSError) -> str:
    """One line naming the settings file that cannot be read, and why."""
    env_file = Settings.model_config.get("env_file")
    name = exc.filename if isinstance(exc, OSError) and exc.filename else str(env_file)
    if isinstance(exc, UnicodeDecodeError):
        why = f"not {exc.encoding} text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    else:
        why = exc.strerror or str(exc)
    return f"Cannot read the settings file {Path(name).resolve()}: {why}"


serve.register(app)
keys.register(app)
upscale.register(app)
models.register(app)
client.register(app)
