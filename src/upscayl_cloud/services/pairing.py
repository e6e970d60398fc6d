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
some of the newest unexpired files the database lists (an existing
deployment's first start after the upgrade; a marker lost), or the row was
made by a start cut short before it wrote the marker (``paired_at`` unset)
and the store has the name that start gave it, the database listing no files
to look for. Once a store has had the id, a store of the same name without
it is refused: an empty folder where a share was not mounted, the same
bucket name on another server. A database without a row (new, or restored
from a backup made before its pairing) takes the id of a store that has a
marker when that store holds its files or the database lists none.

Everything is read before anything is written: a start cut short (the store
not answering yet) leaves the database as it found it, and the next start
decides again from the same facts. Processes starting together agree: the
row is inserted if absent (one fixed primary key, so the first insert wins
on both databases) and each reads the winner's id back and goes on with it;
two writing the marker write the same id.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from sqlalchemy import Connection, Engine, Executable, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from upscayl_cloud.config import Settings, StorageBackend
from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import store_identity, task_files, uploads
from upscayl_cloud.storage.base import (
    ObjectMissingError,
    ObjectStorage,
    StorageError,
    StorageUnavailableError,
)

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
#: Appended to a store's 403 at start: AWS answers a GET or HEAD of a
#: missing object with 403 instead of 404 when the credentials may not list
#: the bucket, and the marker is missing at every deployment's first start.
#: The start still fails (a 403 may as well be a real refusal, and taking it
#: for "missing" would pair a store this process cannot read).
LIST_BUCKET_HINT = (
    "without s3:ListBucket on the bucket, S3 answers 403 for an object that does not "
    "exist, such as this marker before the first start: grant the keys s3:ListBucket "
    "as deployment.md lists"
)


class StoreMismatchError(Exception):
    """This process's object store is not the one the database's other
    processes use: every file it claimed would be missing here."""


@dataclass(frozen=True)
class StoreName:
    """How a store is named to people, without credentials."""

    #: "s3 bucket photos" or "local folder /srv/upscayl/objects".
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
class _Row:
    """The database's ``store_identity`` row."""

    store_id: str
    name: StoreName
    #: None while the id was never in a store (see ``tables.store_identity``).
    paired_at: int | None


class _Files:
    """The database's newest unexpired files, and whether the store holds
    any: read once, and only when a decision needs them."""

    def __init__(self, db: Engine, storage: ObjectStorage) -> None:
        self._db = db
        self._storage = storage

    @cached_property
    def sample(self) -> list[str]:
        return newest_object_keys(self._db)

    @cached_property
    def held(self) -> bool:
        return any(self._storage.size(key) is not None for key in self.sample)


def check_store_pairing(db: Engine, storage: ObjectStorage, settings: Settings) -> str:
    """Pair the database with ``storage`` on their first start together, or
    make sure they were; returns their id. Raises :class:`StoreMismatchError`
    when ``storage`` is another store than the database's, and the store's
    own errors (an outage is ``StorageUnavailableError``) as they come."""
    ours = store_name(settings)
    files = _Files(db, storage)
    with _explained():
        row = _read_row(db)
        marker = read_marker(storage)
        if row is None:
            row = _first_row(db, ours, marker, files)
            # Read again: the row may be another process's, which started
            # with us and has written its marker since our read.
            marker = read_marker(storage)
        return _check(db, storage, ours, row, marker, files)


def _first_row(db: Engine, ours: StoreName, marker: str | None, files: _Files) -> _Row:
    """The row of a database without one (new, or restored from a backup
    made before its pairing), made only once the store has shown it may be
    the database's: a refused start leaves none behind, so that the right
    store's next start (or its marker's id) still pairs."""
    if marker is not None:
        if _ID.fullmatch(marker) and (not files.sample or files.held):
            row = _insert_row(db, marker, ours, paired_at=now_ms())
            if row.store_id == marker:
                log.info(
                    "took the pairing %s from %s, the store beside this database", marker, ours
                )
            return row  # another process's id, when one won the insert: _check compares
        raise StoreMismatchError(
            _refusal(
                ours,
                None,
                f"{ours} holds the marker of another database ({MARKER_KEY}: {marker[:40]!a})"
                + (
                    f" and none of this database's {len(files.sample)} newest files"
                    if files.sample
                    else ""
                ),
                remedy=(
                    f" If this database is meant to take over this store, delete {MARKER_KEY} "
                    "from it." + (_right_one_first() if files.sample else "")
                ),
            )
        )
    if files.sample and not files.held:
        raise StoreMismatchError(
            _refusal(
                ours,
                None,
                f"{ours} has no marker ({MARKER_KEY}) and none of the database's "
                f"{len(files.sample)} newest files",
                remedy=_right_one_first(),
            )
        )
    return _insert_row(db, secrets.token_hex(16), ours, paired_at=None)


def _check(
    db: Engine,
    storage: ObjectStorage,
    ours: StoreName,
    row: _Row,
    marker: str | None,
    files: _Files,
) -> str:
    """Compare the store with the database's row; write the marker where
    the store has shown it is the database's but lacks it."""
    if marker == row.store_id:
        _settle(db, row, ours)
        return row.store_id
    if marker is not None:
        raise StoreMismatchError(
            _refusal(
                ours,
                row,
                f"{ours} holds the marker of another database ({MARKER_KEY}: {marker[:40]!a}, "
                f"where this database's is {row.store_id})",
                remedy=(
                    f" If this database is meant to take over this store, delete {MARKER_KEY} "
                    f"from it, or write {row.store_id} into it."
                ),
            )
        )
    if files.held:
        log.info("%s holds this database's files but no marker: pairing them", ours)
    elif row.paired_at is None and not files.sample and row.name == ours:
        log.info("pairing this database with %s, where its first start left off", ours)
    else:
        what = (
            f" and none of the database's {len(files.sample)} newest files"
            if files.sample
            else ", and the database lists no unexpired files to look for in it"
        )
        raise StoreMismatchError(
            _refusal(
                ours,
                row,
                f"{ours} has no marker ({MARKER_KEY}){what}",
                remedy=(
                    " If this store is the right one after all, put an object "
                    f"{MARKER_KEY} holding {row.store_id} in it."
                ),
            )
        )
    write_marker(storage, row.store_id)
    _settle(db, row, ours)
    log.info("paired this database with %s (marker %s: %s)", ours, MARKER_KEY, row.store_id)
    return row.store_id


@contextmanager
def _explained() -> Iterator[None]:
    """A store's 403 leaves with :data:`LIST_BUCKET_HINT` appended: without
    it, every first start on AWS with keys lacking s3:ListBucket failed with
    a bare "upscayl-cloud-store-id: S3 error AccessDenied"."""
    try:
        yield
    except StorageError as exc:
        if isinstance(exc, StorageUnavailableError | ObjectMissingError) or not _denied(exc):
            raise
        raise StorageError(f"{exc} ({LIST_BUCKET_HINT})") from exc


def _denied(exc: StorageError) -> bool:
    """Whether ``exc`` is the store's 403 (AccessDenied; a HEAD's has no
    body, hence no code but the status)."""
    cause = exc.__cause__
    if not isinstance(cause, ClientError):
        return False
    status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(cause.response.get("Error", {}).get("Code", ""))
    return status == 403 and code in ("AccessDenied", "403", "Forbidden")


def _read_row(db: Engine) -> _Row | None:
    with reading(db) as conn:
        found = conn.execute(select(store_identity).where(store_identity.c.slot == 1)).first()
    if found is None:
        return None
    return _Row(found.store_id, StoreName(found.location, found.endpoint), found.paired_at)


def _insert_row(db: Engine, store_id: str, ours: StoreName, paired_at: int | None) -> _Row:
    """Insert the row unless one is there, and return the one that is: of
    processes starting together one inserts, and the others read its id."""
    now = now_ms()
    values = {
        "slot": 1,
        "store_id": store_id,
        "location": ours.location,
        "endpoint": ours.endpoint,
        "created_at": now,
        "updated_at": now,
        "paired_at": paired_at,
    }
    with db.begin() as conn:
        conn.execute(_insert_if_absent(conn, values))
        found = conn.execute(select(store_identity).where(store_identity.c.slot == 1)).one()
    return _Row(found.store_id, StoreName(found.location, found.endpoint), found.paired_at)


def _insert_if_absent(conn: Connection, values: dict[str, object]) -> Executable:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the database's own dialect:
    on PostgreSQL a concurrent insert waits for the first one's commit, then
    does nothing; SQLite's ``BEGIN IMMEDIATE`` serialises them already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(store_identity).values(values).on_conflict_do_nothing()


def _settle(db: Engine, row: _Row, ours: StoreName) -> None:
    """Record that the id is in a store, and ``ours`` as that store's name
    when it was another: a bucket moved with its marker is named by its new
    name from then on. Guarded by the id, in case the row was replaced."""
    if row.name == ours and row.paired_at is not None:
        return
    with db.begin() as conn:
        conn.execute(
            update(store_identity)
            .where(store_identity.c.slot == 1, store_identity.c.store_id == row.store_id)
            .values(
                location=ours.location,
                endpoint=ours.endpoint,
                updated_at=now_ms(),
                paired_at=func.coalesce(store_identity.c.paired_at, now_ms()),
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
    """Keys of objects the database says exist: its newest unexpired
    results, and its newest unexpired uploads a task names (start-task found
    each in the store; an upload no task names may never have been sent).
    Expired rows the sweeper has not reached yet are left out: after a long
    stop the bucket's lifecycle rules (deployment.md) may have removed their
    objects, which would make the right store look like a stranger. Both
    read partial indexes of live rows only; expiry by the database's clock."""
    now = now_ms()
    results = (
        select(task_files.c.result_key)
        .where(
            task_files.c.deleted_at.is_(None),
            task_files.c.expires_at.is_not(None),
            task_files.c.expires_at > now,
            task_files.c.result_key.is_not(None),
        )
        .order_by(task_files.c.expires_at.desc())
        .limit(SAMPLE)
    )
    named = exists().where(task_files.c.source_key == uploads.c.storage_key)
    sources = (
        select(uploads.c.storage_key)
        .where(uploads.c.deleted_at.is_(None), uploads.c.expires_at > now, named)
        .order_by(uploads.c.expires_at.desc())
        .limit(SAMPLE)
    )
    with reading(db) as conn:
        keys = list(conn.execute(results).scalars()) + list(conn.execute(sources).scalars())
    return [str(key) for key in keys]


def _refusal(ours: StoreName, row: _Row | None, why: str, remedy: str) -> str:
    """The one line a refused start prints (after "Cannot start: ");
    ``row`` None when the database has no pairing yet."""
    if row is None:
        theirs = (
            "The database had no store paired with it yet (a new database, one from "
            "before migration 0007, or one restored from a backup made before its pairing)."
        )
    elif row.name == ours:
        # Never "the database's store is X" about X itself: this store has
        # the name the database knows its store by, and is another one.
        theirs = (
            "The database's store was known by this same name: this one is another "
            "store under it (a share not mounted here, another server at the same "
            "address) or its marker was replaced."
        )
    elif row.paired_at is None:
        theirs = f"The database's first start was with {row.name}, whose pairing did not finish."
    else:
        theirs = f"The database's store is {row.name}."
    return (
        "this process's object store is not the one the other processes of this database "
        f"use, so every file it handled would be missing: {why}. {theirs} Every serve "
        "and worker process of a database must use one store: compare this machine's "
        "UPSCAYL_DATABASE_URL, UPSCAYL_STORAGE_BACKEND and UPSCAYL_S3_BUCKET / "
        "UPSCAYL_S3_ENDPOINT_URL (or UPSCAYL_DATA_DIR / UPSCAYL_STORAGE_DIR) with the "
        f"others' (deployment.md, Roles).{remedy}"
    )


def _right_one_first() -> str:
    """The remedy while the database has no id to name: the store holding
    its files pairs it, and this store's refusal then names the id."""
    return (
        " If this store is the right one after all, start a process whose store holds "
        "the database's files first: it pairs them, and this line then names the id to "
        "put in this store."
    )
