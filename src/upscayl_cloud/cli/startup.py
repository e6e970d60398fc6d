"""Opening the service's context for a command: a data folder, database or
object store that cannot be used at start is one line saying which, not a
traceback.

An operator starting a process before PostgreSQL or the store is up (a
compose file, a reboot) read some 475 lines ending in psycopg's words; the
password in the database URL is never shown.
"""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError

from upscayl_cloud.config import SecretFileError, Settings
from upscayl_cloud.db.engine import database_unavailable
from upscayl_cloud.services.context import Context, build_context, prepare_data_dir
from upscayl_cloud.services.pairing import StoreMismatchError
from upscayl_cloud.services.secrets import SecretMismatchError
from upscayl_cloud.storage.base import StorageError, StorageUnavailableError


def open_context(settings: Settings, *, records_secret: bool = False) -> Context:
    """``build_context``, or exit 1 with one line naming what failed: the
    data folder unusable, the store unreachable or refusing (no such
    bucket, no credentials, a name S3 does not allow), the database
    unreachable or refusing (locked, out of connections...), in their own
    words, or a secret or store not the database's other processes' own.

    ``records_secret`` is the service's own processes' (``serve``,
    ``worker``): they also check that their store is the database's
    (``services.pairing``), before any task is claimed or link handed out;
    the ``keys`` and ``credits`` commands never touch the store."""
    prepare_folder(settings)
    try:
        return build_context(settings, records_secret=records_secret, checks_store=records_secret)
    except StorageUnavailableError as exc:
        typer.echo(f"Cannot reach the object store: {_first_line(exc)}", err=True)
        raise typer.Exit(1) from None
    except StorageError as exc:
        typer.echo(f"Cannot use the object store: {_first_line(exc)}", err=True)
        raise typer.Exit(1) from None
    except (SecretMismatchError, StoreMismatchError) as exc:
        typer.echo(f"Cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except SecretFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # the database's folder missing or not ours, a full disk
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"Cannot start: {exc.strerror or exc}{where}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        exit_if_database_failed(settings, exc)
        raise


def prepare_folder(settings: Settings) -> None:
    """``prepare_data_dir``, or exit 1 naming the folder and why (a file in
    its place, no permission), instead of a traceback."""
    try:
        prepare_data_dir(settings)
    except OSError as exc:
        where = exc.filename or settings.data_dir
        typer.echo(
            f"Cannot use the data folder {settings.data_dir} (UPSCAYL_DATA_DIR): "
            f"{exc.strerror or exc} ({where})",
            err=True,
        )
        raise typer.Exit(1) from None


def exit_if_database_failed(settings: Settings, exc: BaseException) -> None:
    """Exit 1 with one line when ``exc`` says the database cannot be used;
    return (for the caller to re-raise) when it is something else."""
    # At start, any error of the driver means this database cannot be used
    # (a file that is no SQLite database answers DatabaseError, not an outage).
    if not (database_unavailable(exc) or isinstance(exc, DatabaseError)):
        return
    # The query may hold a password too (libpq's ?password=).
    url = make_url(settings.resolved_database_url).set(query={})
    shown = url.render_as_string(hide_password=True)
    reason = _first_line(getattr(exc, "orig", None) or exc)
    typer.echo(f"Cannot use the database {shown}: {reason}", err=True)
    raise typer.Exit(1) from None


def missing_embedded_database(settings: Settings) -> Path | None:
    """The SQLite database's file when it does not exist yet (None when it
    does, or the database is a server's). ``keys`` and ``credits`` run in a
    folder other than the server's used to create a fresh ``./data`` there,
    silently: ``keys list`` printed nothing, and a key made there was unknown
    to the running server. A SQLite ``UPSCAYL_DATABASE_URL`` is read the same
    way (a relative ``sqlite:///upscayl.db`` is a file in the current
    folder), unless the file's folder is missing too: opening it then says
    so itself, and creates nothing."""
    if not settings.database_url:
        path = (settings.data_dir / "upscayl.db").resolve()
        return None if path.exists() else path
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or "uri" in url.query:
        return None  # a server's, or a file: URI (in-memory ones are refused earlier)
    path = Path(url.database).resolve()
    return None if path.exists() or not path.parent.is_dir() else path


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
