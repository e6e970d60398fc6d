"""``upscayl-cloud keys create|list|revoke`` and ``upscayl-cloud credits add|remove``.

``keys create`` prints the new key alone on its last line (or JSON with
``--json``) so scripts can capture it; it is never shown again.

Removing credits is its own command: a negative number after ``credits add``
reads to Click as an unknown option (``-1000``), so it needed ``--``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from upscayl_cloud.cli.help import FLAG, HELP_MARKUP
from upscayl_cloud.cli.startup import missing_embedded_database, open_context
from upscayl_cloud.config import get_settings
from upscayl_cloud.services import keys as key_service
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import ServiceError

keys_app = typer.Typer(
    help="Create, list and revoke API keys.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP
)
credits_app = typer.Typer(
    help="Manage credits.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP
)


def _context(creating: bool = False) -> Context:
    """The service's context. Without a SQLite database file where the
    settings put it (another folder than the server's, no UPSCAYL_DATA_DIR,
    or a relative sqlite:/// UPSCAYL_DATABASE_URL), a command that reads or
    changes keys refuses, and ``keys create`` says it starts a new one
    (stderr: the key stays alone on the last line of stdout)."""
    settings = get_settings()
    missing = missing_embedded_database(settings)
    if missing is not None and not creating:
        typer.echo(
            f"error: no database at {missing}: run this in the folder the server "
            "runs in, or set UPSCAYL_DATA_DIR (or UPSCAYL_DATABASE_URL) as the server has it",
            err=True,
        )
        raise typer.Exit(code=1)
    ctx = open_context(settings)
    if missing is not None:
        chooser = "UPSCAYL_DATABASE_URL" if settings.database_url else "UPSCAYL_DATA_DIR"
        typer.echo(
            f"Started a new database at {missing}: a server using another database "
            f"will not know this key ({chooser} picks one)",
            err=True,
        )
    return ctx


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _info_dict(info: key_service.KeyInfo) -> dict[str, object]:
    return {
        "id": info.id,
        "name": info.name,
        "prefix": info.prefix,
        "accountId": info.account_id,
        "credits": info.credits,
        "createdAt": info.created_at,
        "revokedAt": info.revoked_at,
    }


#: How a key is named on the command line (see ``key_service.resolve_key_id``).
IDENT_HELP = (
    "Key id, the key, or any unique start of the prefix `keys list` shows "
    f"(at least {key_service.MIN_PREFIX_LENGTH} characters, e.g. uc_d_Us)."
)


def _default_name() -> str:
    """A label for a key made without ``--name``: the day it was made, which
    is what an operator needs first when reading ``keys list`` later."""
    return "key-" + datetime.now(UTC).strftime("%Y-%m-%d")


def _fail(exc: ServiceError) -> None:
    typer.echo(f"error: {exc.public_message}", err=True)
    raise typer.Exit(code=1)


@keys_app.command("create")
def create(
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help=(
                f"Label for the key (and its account), at most {key_service.MAX_NAME_LENGTH} "
                "characters. Default: key-YYYY-MM-DD (today, UTC)."
            ),
            show_default=False,
        ),
    ] = None,
    credits: Annotated[
        int,
        typer.Option(
            "--credits", min=0, help="Credits for the new account (with --account: added to it)."
        ),
    ] = 0,
    account: Annotated[
        str | None, typer.Option("--account", help="Add a key to this existing account id.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", metavar=FLAG, help='Print one JSON object, the key in its "key".'),
    ] = False,
) -> None:
    """Create a key. The key is printed once, alone on the last line (with
    --json: in the object's "key")."""
    name = name or _default_name()
    try:  # before any database is opened (or created) for it
        key_service.check_key_name(name)
    except ServiceError as exc:
        _fail(exc)
    ctx = _context(creating=account is None)  # an existing account needs its database
    try:
        key, info = key_service.create_key(ctx, name, credits, account)
    except ServiceError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps({"key": key, **_info_dict(info)}))
        return
    typer.echo(
        f"Created key {info.prefix}... for account {info.account_id} ({info.credits} credits)"
    )
    typer.echo(key)


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print JSON.")] = False,
) -> None:
    """List keys (their prefixes only: keys themselves are not stored)."""
    infos = key_service.list_keys(_context())
    if as_json:
        typer.echo(json.dumps([_info_dict(i) for i in infos]))
        return
    if not infos:
        typer.echo("No keys yet: `upscayl-cloud keys create --credits N` makes one")
    for info in infos:
        state = "revoked " + _when(info.revoked_at) if info.revoked_at else "active"
        typer.echo(
            f"{info.id}  {info.prefix}...  {info.name!r}  account={info.account_id}  "
            f"credits={info.credits}  created={_when(info.created_at)}  {state}"
        )


@keys_app.command("revoke")
def revoke(ident: Annotated[str, typer.Argument(help=IDENT_HELP)]) -> None:
    """Revoke a key: it stops working at once."""
    ctx = _context()
    try:
        info, revoked_now = key_service.revoke_key(ctx, ident)
    except ServiceError as exc:
        _fail(exc)
        return
    if not revoked_now:
        typer.echo(f"Key {info.id} ({info.prefix}...) was already revoked {_when(info.revoked_at)}")
        return
    typer.echo(f"Revoked key {info.id} ({info.prefix}...)")


def _print_balance(info: key_service.KeyInfo) -> None:
    typer.echo(f"Account {info.account_id} now has {info.credits} credits")


@credits_app.command("add")
def add(
    ident: Annotated[str, typer.Argument(help=IDENT_HELP)],
    amount: Annotated[int, typer.Argument(help="Credits to add.")],
) -> None:
    """Add credits to the account behind a key (to take some away: `credits remove`)."""
    # A negative amount (only reachable after ``--``) still removes, as it
    # always did, so existing scripts keep working.
    try:
        info = key_service.add_credits(_context(), ident, amount)
    except ServiceError as exc:
        _fail(exc)
        return
    _print_balance(info)


@credits_app.command("remove")
def remove(
    ident: Annotated[str, typer.Argument(help=IDENT_HELP)],
    amount: Annotated[int, typer.Argument(min=0, help="Credits to remove.")],
) -> None:
    """Remove credits from the account behind a key (never below 0).

    Asking for more than the account has changes nothing and says how many
    can be removed.
    """
    try:
        info = key_service.remove_credits(_context(), ident, amount)
    except ServiceError as exc:
        _fail(exc)
        return
    _print_balance(info)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(credits_app, name="credits")
