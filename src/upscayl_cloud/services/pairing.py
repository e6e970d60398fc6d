"""One object store per database, checked at start.

A worker whose machine lacked ``UPSCAYL_STORAGE_BACKEND=s3`` fell back to a
local folder beside the shared PostgreSQL and started without a word: it
claimed tasks, found none of their files, and failed each one in under a
second, so it drained the queue faster than the healthy workers. A bucket
or endpoint of its own did the same. The database and its store therefore
share a random id: a row of ``store_identity``, and a marker object at
:data:`MARKER_KEY` in the store. Each ``serve`` and ``worker`` compares
them at start and refuses to run when its store holds another.

The marker's key is outside every prefix the service writes objects under
(``uploads/``, ``results/``, ``thumbs/``, ``health/``), so no account's key
can take it, and neither the sweeper nor the bucket lifecycle rules of
deployment.md (which expire those prefixes) ever delete it; the local
store's clean-up removes only its own dot-named leftovers.

A store without the marker is paired when it shows it belongs: it holds
some of the newest files the database lists (an existing deployment's
first start after the upgrade; a marker lost), or the database lists none
and the store is the one it was paired with by name (a new deployment,
where the process that created the row may not have written the marker
yet). Processes starting together agree: the row is inserted if absent
(one fixed primary key, so the first insert wins on both databases) and
each reads the winner's id back; two writing the marker write the same id.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, Executable, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite

from upscayl_cloud.config import Settings, StorageBackend
from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import store_identity, task_files, uploads
from upscayl_cloud.storage.base import ObjectMissingError, ObjectStorage

log = logging.getLogger(__name__)

#: The marker object's key: no prefix of the service's own (see above).
MARKER_KEY = "upscayl-cloud-store-id"
#: The most bytes read from a marker: an id is 32; more is someone else's file.
_MARKER_BYTES = 256
#: What an id looks like (``secrets.token_hex(16)``; a little leeway).
_ID = re.compile(r"[0-9a-f]{16,64}")
#: Newest results, and newest uploads a task names, looked for in a store
#: without the marker: one found is enough, so a few deleted by hand or lost
#: in a crash do not matter.
SAMPLE = 5


class StoreMismatchError(Exception):
    """This process's object store is not the one the database's other
    processes use: every file it claimed would be missing here."""


@dataclass(frozen=True)
class StoreName:
    """How a store is named to people, without credentials."""

    #: "s3 bucket photos" or "local folder /srv/upscayl/objects": what is
    #: compared when nothing else tells whether two processes share a store.
    location: str
    #: The S3 endpoint (or AWS's, by region); None for a folder.
    endpoint: str | None = None

    def __str__(self) -> str:
        return f"{self.location} at {self.endpoint}" if self.endpoint else self.location


def store_name(settings: Settings) -> StoreName:
    """The store ``settings`` name: backend, bucket and endpoint, or folder."""
    if settings.storage_backend is StorageBackend.s3:
        endpoint = _shown_endpoint(settings.s3_endpoint_url)
        return StoreName(
            f"s3 bucket {settings.s3_bucket}", endpoint or f"AWS S3 ({settings.s3_region})"
        )
    return StoreName(f"local folder {settings.resolved_storage_dir}")


def _shown_endpoint(url: str) -> str:
    """``url``'s scheme, host, port and path: a user and password written
    into it (or a query) are never stored or shown."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


@dataclass(frozen=True)
class _Paired:
    store_id: str
    name: StoreName


def check_store_pairing(db: Engine, storage: ObjectStorage, settings: Settings) -> str:
    """Pair the database with ``storage`` on their first start together, or
    make sure they were; returns their id. Raises :class:`StoreMismatchError`
    when ``storage`` is another store than the database's, and the store's
    own errors (an outage is ``StorageUnavailableError``) as they come."""
    ours = store_name(settings)
    paired, created = _paired_row(db, ours)
    marker = read_marker(storage)
    if marker == paired.store_id:
        _remember(db, paired, ours)
        return paired.store_id
    if marker is not None:
        if created and _ID.fullmatch(marker) and _holds_files(db, storage):
            # A database without a pairing (restored from a backup made
            # before it) beside the store it was paired with: the store's id.
            _adopt_marker(db, paired, marker, ours)
            log.info("took the pairing %s from %s: it holds this database's files", marker, ours)
            return marker
        raise StoreMismatchError(
            _refusal(
                ours,
                None if created else paired,
                f"{ours} holds the marker of another database ({MARKER_KEY}: {marker[:40]!a}, "
                f"where this database's is {paired.store_id})",
                remedy="",
            )
        )
    sample = newest_object_keys(db)
    if sample:
        if not _any_stored(storage, sample):
            raise StoreMismatchError(
                _refusal(
                    ours,
                    None if created else paired,
                    f"{ours} has no marker ({MARKER_KEY}) and none of the database's "
                    f"{len(sample)} newest files",
                    remedy=_write_it_yourself(paired),
                )
            )
        log.info("%s holds this database's files but no marker: pairing them", ours)
    elif paired.name.location != ours.location:
        raise StoreMismatchError(
            _refusal(
                ours,
                paired,
                f"{ours} has no marker ({MARKER_KEY}), and the database lists no files "
                "to look for in it",
                remedy=_write_it_yourself(paired),
            )
        )
    write_marker(storage, paired.store_id)
    _remember(db, paired, ours)
    log.info("paired this database with %s (marker %s: %s)", ours, MARKER_KEY, paired.store_id)
    return paired.store_id


def _holds_files(db: Engine, storage: ObjectStorage) -> bool:
    """Whether ``storage`` holds any of the database's newest files."""
    sample = newest_object_keys(db)
    return bool(sample) and _any_stored(storage, sample)


def _any_stored(storage: ObjectStorage, keys: list[str]) -> bool:
    return any(storage.size(key) is not None for key in keys)


def _paired_row(db: Engine, ours: StoreName) -> tuple[_Paired, bool]:
    """The database's pairing, and whether this call made it (with a new id,
    naming ``ours``). The row's key is always 1, so of processes starting
    together one inserts and the others insert nothing and read its id."""
    now = now_ms()
    mine = secrets.token_hex(16)
    values = {
        "slot": 1,
        "store_id": mine,
        "location": ours.location,
        "endpoint": ours.endpoint,
        "created_at": now,
        "updated_at": now,
    }
    with db.begin() as conn:
        conn.execute(_insert_if_absent(conn, values))
        row = conn.execute(select(store_identity).where(store_identity.c.slot == 1)).one()
    return _Paired(row.store_id, StoreName(row.location, row.endpoint)), row.store_id == mine


def _insert_if_absent(conn: Connection, values: dict[str, object]) -> Executable:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the database's own dialect:
    on PostgreSQL a concurrent insert waits for the first one's commit, then
    does nothing; SQLite's ``BEGIN IMMEDIATE`` serialises them already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(store_identity).values(values).on_conflict_do_nothing()


def _remember(db: Engine, paired: _Paired, ours: StoreName) -> None:
    """Record ``ours`` as the database's store's name, when it was another:
    a bucket moved with its marker is named by its new name from then on.
    Guarded by the id, in case the row was replaced meanwhile."""
    if paired.name == ours:
        return
    with db.begin() as conn:
        conn.execute(
            update(store_identity)
            .where(store_identity.c.slot == 1, store_identity.c.store_id == paired.store_id)
            .values(location=ours.location, endpoint=ours.endpoint, updated_at=now_ms())
        )


def _adopt_marker(db: Engine, paired: _Paired, marker: str, ours: StoreName) -> None:
    """Make the store's id the database's, in the row this process just made."""
    with db.begin() as conn:
        conn.execute(
            update(store_identity)
            .where(store_identity.c.slot == 1, store_identity.c.store_id == paired.store_id)
            .values(
                store_id=marker, location=ours.location, endpoint=ours.endpoint, updated_at=now_ms()
            )
        )


def read_marker(storage: ObjectStorage) -> str | None:
    """The id the store's marker holds, or None when it has none (an empty
    object counts as none: a ``touch`` is no id)."""
    try:
        content = storage.read_head(MARKER_KEY, _MARKER_BYTES)
    except ObjectMissingError:
        return None
    return content.decode("ascii", errors="replace").strip() or None


def write_marker(storage: ObjectStorage, store_id: str) -> None:
    """The marker holds the id alone, so that an operator can read it, or
    write it (``echo ID > upscayl-cloud-store-id``), as the refusal says."""
    storage.write_stream(MARKER_KEY, iter([store_id.encode("ascii")]), _MARKER_BYTES)


def newest_object_keys(db: Engine) -> list[str]:
    """Keys of objects the database says exist: its newest live results,
    and its newest live uploads a task names (start-task found each in the
    store; an upload no task names may never have been sent). Both read
    partial indexes of live rows only."""
    results = (
        select(task_files.c.result_key)
        .where(
            task_files.c.deleted_at.is_(None),
            task_files.c.expires_at.is_not(None),
            task_files.c.result_key.is_not(None),
        )
        .order_by(task_files.c.expires_at.desc())
        .limit(SAMPLE)
    )
    named = exists().where(task_files.c.source_key == uploads.c.storage_key)
    sources = (
        select(uploads.c.storage_key)
        .where(uploads.c.deleted_at.is_(None), named)
        .order_by(uploads.c.expires_at.desc())
        .limit(SAMPLE)
    )
    with reading(db) as conn:
        keys = list(conn.execute(results).scalars()) + list(conn.execute(sources).scalars())
    return [str(key) for key in keys]


def _refusal(ours: StoreName, paired: _Paired | None, why: str, remedy: str) -> str:
    """The one line a refused start prints (after "Cannot start: ");
    ``paired`` None when the database had no pairing before this start."""
    if paired is None:
        theirs = (
            "The database had no store paired with it yet (a new database, or one "
            "from before migration 0007)."
        )
    else:
        theirs = f"The database's store is {paired.name}."
    return (
        "this process's object store is not the one the other processes of this database "
        f"use, so every file it handled would be missing: {why}. {theirs} Every serve "
        "and worker process of a database must use one store: compare this machine's "
        "UPSCAYL_DATABASE_URL, UPSCAYL_STORAGE_BACKEND and UPSCAYL_S3_BUCKET / "
        "UPSCAYL_S3_ENDPOINT_URL (or UPSCAYL_DATA_DIR / UPSCAYL_STORAGE_DIR) with the "
        f"others' (deployment.md, Roles).{remedy}"
    )


def _write_it_yourself(paired: _Paired) -> str:
    return (
        " If this store is the right one after all, put an object "
        f"{MARKER_KEY} holding {paired.store_id} in it."
    )
