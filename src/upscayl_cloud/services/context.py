"""The collaborators every use case needs, built once by the composition root."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine, make_url

from upscayl_cloud.config import Settings
from upscayl_cloud.db.engine import make_engine, sync_clock
from upscayl_cloud.db.migrate import upgrade
from upscayl_cloud.services.pairing import check_store_pairing
from upscayl_cloud.services.secrets import check_shared_secret
from upscayl_cloud.storage import build_storage
from upscayl_cloud.storage.base import ObjectStorage


@dataclass(frozen=True)
class Context:
    settings: Settings
    db: Engine
    storage: ObjectStorage


#: Databases this process has already migrated to head (by URL).
_migrated: set[str] = set()
_migrated_lock = threading.Lock()


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory readable by this user alone, and the embedded
    database file likewise: they hold account names, file names and history,
    and a default umask would leave both world-readable. Existing ones are
    left as their owner set them. SQLite gives its journal files the
    database file's mode."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.database_url:
        path = make_url(settings.resolved_database_url).database
        os.close(os.open(str(path), os.O_CREAT | os.O_WRONLY, 0o600))


def build_context(
    settings: Settings,
    *,
    migrate: bool = True,
    records_secret: bool = False,
    checks_store: bool = False,
) -> Context:
    """Data directory, database (migrated to head) and storage, ready to use.

    ``serve`` builds a context for the first key and the app builds another:
    the migration runs once per database per process, not per context (an
    in-memory SQLite database is new with every engine, so it always runs).
    The signing secret is checked against the database's record of them;
    only the service's own processes (``records_secret``: ``serve``,
    ``worker``) add theirs to it, and ``create_key`` the one it hashes a key
    with, never an operator's ``keys list`` from a shell that may lack the
    secret. Those processes also make sure the store is the database's own
    (``checks_store``, ``services.pairing``): it reads the store, and pairs
    a new one, which the other commands and the tests' contexts need not.
    """
    prepare_data_dir(settings)
    url = settings.resolved_database_url
    db = make_engine(url)
    try:
        if migrate:
            with _migrated_lock:
                if url not in _migrated:
                    upgrade(db)
                    if ":memory:" not in url:
                        _migrated.add(url)
            sync_clock(db)
            check_shared_secret(db, settings, record=records_secret)
        storage = build_storage(settings)
        if migrate and checks_store:
            check_store_pairing(db, storage, settings)
    except BaseException:
        db.dispose()  # a refused start leaves no connection open
        raise
    return Context(settings=settings, db=db, storage=storage)
