"""Issuing upload links, receiving direct uploads, completing multipart uploads.

An upload is a row (owner, declared type and size, expiry) plus an object
under a generated key ``uploads/<account>/<fileName>``. The client's file
name is kept only as a label: it never becomes part of a path unsanitised.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, exists, func, insert, select, update

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import accounts, task_files, tasks, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import (
    BadRequestError,
    FileSizeExceededError,
    InvalidFileTypeError,
    RateLimitExceededError,
)
from upscayl_cloud.services.imagecheck import ALLOWED_TYPES, EXTENSIONS
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.storage.base import (
    IMAGE_TYPES,
    MAX_PARTS,
    CompletedPart,
    MultipartError,
    ObjectTooLargeError,
    StorageError,
)

log = logging.getLogger(__name__)

#: How long after its link expired an upload whose file never arrived stops
#: counting against the pending cap (see :func:`forget_unsent`).
UNSENT_GRACE_MS = 60 * 60 * 1000
#: Most uploads the store is asked about when the cap would refuse.
MAX_UNSENT_CHECKS = 100
#: Longest generated ``fileName`` in UTF-8 bytes: the local store keeps it as
#: one file name (255 bytes on common file systems) and the key column holds 300.
MAX_GENERATED_NAME_BYTES = 200
#: Longest name a client is told to save a file under: file systems stop at
#: 255 bytes, and a client may add " (2)" or "_thumb" to it.
MAX_BASE_NAME_BYTES = 200
_EXTENSION = re.compile(r"^[^\W_]{1,10}$")
#: Characters Windows refuses in file names; a client on Windows saves under our name.
_RESERVED = set('<>:"|?*')
_RUN_OF_DASHES = re.compile(r"-{2,}")


@dataclass(frozen=True)
class PartLink:
    part_number: int
    upload_url: str


@dataclass(frozen=True)
class UploadLink:
    upload_url: str
    file_name: str
    file_type: str
    file_size: int
    original_file_name: str
    created_at: int
    expires_at: int
    #: Present when a multipart upload was offered (see docs/api.md).
    upload_id: str | None = None
    key: str | None = None
    part_size: int | None = None
    parts: tuple[PartLink, ...] = ()


def _last_component(name: str) -> str:
    """The part after the last ``/`` or ``\\``: a client's path is never ours to keep."""
    return re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1]


def _split_extension(name: str) -> tuple[str, str]:
    """``("photo", "png")`` for ``photo.png``; no extension unless it looks like one."""
    stem, dot, ext = name.rpartition(".")
    if dot and stem and _EXTENSION.match(ext):
        return stem, ext
    return name, ""


def fit_name(stem: str, ext: str, max_bytes: int) -> str:
    """``stem.ext`` within ``max_bytes`` of UTF-8, cutting the stem, never the extension."""
    suffix = f".{ext}" if ext else ""
    room = max_bytes - len(suffix.encode())
    encoded = stem.encode()
    if len(encoded) > room:
        stem = encoded[:room].decode(errors="ignore")
    return stem + suffix


def _unsafe_in_base_name(char: str) -> bool:
    category = unicodedata.category(char)
    # C*: controls (CR/LF, NUL), format characters (bidi overrides that make
    # "gpj.exe" read as "exe.jpg"), unassigned; Zl/Zp: line and paragraph breaks.
    return category[0] == "C" or category in ("Zl", "Zp") or char in _RESERVED


def safe_base_name(name: str, default: str = "image") -> str:
    """A name a client can save a file under as-is, on any OS, in any folder.

    The last path component only (``..\\..\\win.png`` is ``win.png``), without
    control or line-break characters (a CR/LF in a Content-Disposition header
    or a log line forges what follows), characters Windows refuses, or leading
    dots (hidden files, ``..``); letters of every script are kept.
    """
    kept: list[str] = []
    replaced = False  # a run of unsafe characters becomes one "_"; the caller's own stay
    for char in _last_component(name):
        unsafe = _unsafe_in_base_name(char)
        if not (unsafe and replaced):
            kept.append("_" if unsafe else char)
        replaced = unsafe
    base = "".join(kept).lstrip(". ").rstrip(". ")
    if not base:
        return default
    stem, ext = _split_extension(base)
    return fit_name(stem, ext, MAX_BASE_NAME_BYTES)


def _slug(text: str) -> str:
    """Letters and digits of any script, ``.``, ``_`` and ``-``; any other run is one ``-``."""
    kept = "".join(c if c.isalnum() or c in "._-" else "-" for c in text)
    return _RUN_OF_DASHES.sub("-", kept)


def generated_file_name(original: str, file_type: str) -> str:
    """``<random>-<sanitised original stem>.<ext>``: unique, safe as a path segment.

    The extension is the declared type's, never simply the client's: stores
    serve an object as the type its key's extension names, so ``x.html``
    declared as a PNG must not become a page (it is ``<random>-x-html.png``).
    The client's own extension stays when it is one of the type's usual ones
    (``.jpeg``, ``.JPG``). Long names lose the end of their stem, not the
    extension, so the name still says what the file is. Unicode letters stay
    (``фото.png`` is ``<random>-фото.png``): the key is URL-quoted wherever it
    is sent.
    """
    stem, ext = _split_extension(_last_component(original))
    if IMAGE_TYPES.get(ext.lower()) != file_type:
        stem, ext = (f"{stem}-{ext}" if ext else stem), EXTENSIONS.get(file_type, "bin")
    stem = _slug(stem).strip(".-_")
    prefix = f"{uuid.uuid4().hex[:12]}-"
    return prefix + fit_name(stem or "image", ext, MAX_GENERATED_NAME_BYTES - len(prefix))


def storage_key(account_id: str, file_name: str) -> str:
    return f"uploads/{account_id}/{file_name}"


def check_declared(ctx: Context, file_type: str, file_size: int) -> None:
    if file_type not in ALLOWED_TYPES:
        raise InvalidFileTypeError()
    if file_size > ctx.settings.max_upload_bytes:
        raise FileSizeExceededError.over(ctx.settings.max_upload_bytes)
    if file_size < 1:
        raise BadRequestError("fileSize must be at least 1 byte")


def _waiting(account_id: str, now: int) -> list[ColumnElement[bool]]:
    """The account's uploads that still hold their bytes for nothing: not
    deleted, not expired, and named by no task of the account that may
    still be paid for. A file that failed, alone or with its whole task, is
    refunded: counting it as named let a key with one credit park
    undecodable uploads, one task after another, far past the cap at no
    cost (and the cap then no longer holds what it is documented to).

    ``NOT EXISTS``, one index lookup per live upload
    (``ix_task_files_source_key``), not ``NOT IN (subquery)``: PostgreSQL
    cannot turn that into an anti-join, and rescanned the account's task
    files for every upload, 6-60 s on an account with 200,000 tasks
    (bench/README.md, "Database at scale")."""
    named = exists().where(
        task_files.c.source_key == uploads.c.storage_key,
        task_files.c.task_id == tasks.c.id,
        tasks.c.account_id == account_id,
        task_files.c.status != "failed",
        tasks.c.status != "failed",
    )
    return [
        uploads.c.account_id == account_id,
        uploads.c.deleted_at.is_(None),
        uploads.c.expires_at >= now,
        ~named,
    ]


def check_pending(conn: Connection, account_id: str, file_size: int, now: int, cap: int) -> None:
    """Refuse an upload that would take the account's waiting uploads past ``cap``.

    Uploads cost no credits until a task names them, so this is what keeps a
    key without credits from parking gigabytes for the whole retention.
    """
    pending = conn.execute(
        select(func.coalesce(func.sum(uploads.c.file_size), 0)).where(*_waiting(account_id, now))
    ).scalar_one()
    if pending + file_size <= cap:
        return
    wait = _seconds_until_freed(conn, account_id, pending + file_size - cap, now)
    raise RateLimitExceededError(
        f"Uploads waiting for a task already hold {pending} bytes of this account's "
        f"{cap}, and this one needs {file_size}. Start tasks for the files uploaded, "
        f"or wait until the oldest expire ({_in_words(wait)})",
        wait,
    )


def forget_unsent(ctx: Context, account_id: str, now: int) -> int:
    """Stop counting uploads whose file never came: their link expired
    :data:`UNSENT_GRACE_MS` ago (a PUT begun just before its link expired
    may still be arriving) and the store holds nothing under their key. A
    client that asked for links and crashed would otherwise be held at the
    cap for the whole retention by bytes that do not exist.

    Only looked at when the cap would refuse, so the store is asked about at
    most :data:`MAX_UNSENT_CHECKS` uploads then, largest first. Multipart
    uploads are left alone: their parts may hold bytes, and they can be
    completed after their links expire. The rows are marked deleted, and
    the sweeper's next pass deletes their keys (a file still arriving an
    hour after its link expired would outlive that pass). Returns how many
    were forgotten."""
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(uploads.c.file_name, uploads.c.storage_key)
            .where(
                *_waiting(account_id, now),
                uploads.c.multipart_id.is_(None),
                uploads.c.url_expires_at < now - UNSENT_GRACE_MS,
            )
            .order_by(uploads.c.file_size.desc())
            .limit(MAX_UNSENT_CHECKS)
        ).all()
    unsent = [row.file_name for row in rows if ctx.storage.size(row.storage_key) is None]
    if unsent:
        with ctx.db.begin() as conn:
            # The account's lock, and the waiting conditions again: a
            # start-task naming one of them meanwhile keeps it.
            conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
            conn.execute(
                update(uploads)
                .where(uploads.c.file_name.in_(unsent), *_waiting(account_id, now))
                .values(deleted_at=now)
            )
        log.info("%d uploads of account %s never sent: no longer held", len(unsent), account_id)
    return len(unsent)


def _in_words(seconds: int) -> str:
    """A wait as a person reads it: seconds, minutes, or about N hours."""
    if seconds < 120:
        return f"in {seconds} s"
    if seconds < 2 * 3600:
        return f"in {math.ceil(seconds / 60)} minutes"
    return f"in about {round(seconds / 3600)} hours"


def _seconds_until_freed(conn: Connection, account_id: str, excess: int, now: int) -> int:
    """When enough of the oldest waiting uploads expire to free ``excess`` bytes."""
    rows = conn.execute(
        select(uploads.c.file_size, uploads.c.expires_at)
        .where(*_waiting(account_id, now))
        .order_by(uploads.c.expires_at)
    )
    freed = 0
    for size, expires_at in rows:
        freed += size
        if freed >= excess:
            # expires_at is the last moment an upload counts (see _waiting).
            return max(1, math.ceil((expires_at + 1 - now) / 1000))
    # A task named some of them since the sum was read: there may be room now.
    return 1


def part_lengths(file_size: int, part_size: int) -> list[int]:
    """Each part's exact length: full parts, then the remainder (one part at least).

    The server plans the split, and each part link binds its length, so
    the parts hold the declared size and nothing more (docs/api.md).
    """
    count = max(1, math.ceil(file_size / part_size))
    return [part_size] * (count - 1) + [file_size - part_size * (count - 1)]


def request_upload(
    ctx: Context,
    principal: Principal,
    base_url: str,
    original_file_name: str,
    file_type: str,
    file_size: int,
    multipart: bool | None = None,
) -> UploadLink:
    """A signed PUT link for a new upload; multipart links too when large or asked."""
    check_declared(ctx, file_type, file_size)
    settings = ctx.settings
    now = now_ms()
    # A first look, so that a refusal costs the store nothing; the check that
    # counts is repeated under the account's lock when the row is written.
    try:
        with ctx.db.begin() as conn:
            check_pending(conn, principal.account_id, file_size, now, settings.pending_upload_cap)
    except RateLimitExceededError:
        if not forget_unsent(ctx, principal.account_id, now):
            raise
        with ctx.db.begin() as conn:
            check_pending(conn, principal.account_id, file_size, now, settings.pending_upload_cap)
    # Never beyond the original's own retention: a PUT after the sweeper
    # purged the row would store an object nothing would ever delete.
    ttl = min(settings.upload_url_ttl_seconds, settings.upload_retention_seconds)
    url_expires = now + ttl * 1000
    file_name = generated_file_name(original_file_name, file_type)
    key = storage_key(principal.account_id, file_name)
    url = ctx.storage.presign_put(base_url, key, file_type, file_size, url_expires)
    use_multipart = (
        multipart if multipart is not None else file_size >= settings.multipart_threshold_bytes
    )
    upload_id = part_size = None
    parts: tuple[PartLink, ...] = ()
    if use_multipart:
        part_size = max(settings.multipart_part_bytes, math.ceil(file_size / MAX_PARTS))
        upload_id = ctx.storage.create_multipart(key)
    try:
        if upload_id is not None and part_size is not None:
            parts = tuple(
                PartLink(
                    n, ctx.storage.presign_part(base_url, key, upload_id, n, length, url_expires)
                )
                for n, length in enumerate(part_lengths(file_size, part_size), start=1)
            )
        _record_upload(ctx, principal, file_name, original_file_name, file_type, file_size,
                       key, upload_id, part_size, now, url_expires)  # fmt: skip
    except BaseException:
        if upload_id is not None:
            _abort_quietly(ctx, key, upload_id)
        raise
    return UploadLink(
        upload_url=url,
        file_name=file_name,
        file_type=file_type,
        file_size=file_size,
        original_file_name=original_file_name,
        created_at=now,
        expires_at=url_expires,
        upload_id=upload_id,
        key=key if upload_id else None,
        part_size=part_size,
        parts=parts,
    )


def _abort_quietly(ctx: Context, key: str, upload_id: str) -> None:
    """Drop a multipart upload that no row records: the sweeper aborts only
    uploads in the table, so this one would otherwise hold its parts forever
    (a bucket lifecycle rule, AbortIncompleteMultipartUpload, is the backstop).
    Best effort: the original failure is what the caller must hear about."""
    try:
        ctx.storage.abort_multipart(key, upload_id)
    except StorageError as exc:
        log.warning("could not abort unrecorded multipart upload of %s: %s", key, exc)


def _record_upload(
    ctx: Context,
    principal: Principal,
    file_name: str,
    original_file_name: str,
    file_type: str,
    file_size: int,
    key: str,
    upload_id: str | None,
    part_size: int | None,
    now: int,
    url_expires: int,
) -> None:
    """The upload's row: what ownership checks, completion and the sweeper read.

    The account's row is locked first, so concurrent requests of one account
    check the pending cap one after the other and never overshoot it
    together (on SQLite every write transaction is already exclusive).
    """
    settings = ctx.settings
    with ctx.db.begin() as conn:
        conn.execute(
            select(accounts.c.id)
            .where(accounts.c.id == principal.account_id)
            .with_for_update(key_share=True)
        )
        check_pending(conn, principal.account_id, file_size, now, settings.pending_upload_cap)
        conn.execute(
            insert(uploads).values(
                file_name=file_name,
                account_id=principal.account_id,
                original_file_name=original_file_name,
                file_type=file_type,
                file_size=file_size,
                storage_key=key,
                multipart_id=upload_id,
                part_size=part_size,
                created_at=now,
                url_expires_at=url_expires,
                expires_at=now + settings.upload_retention_seconds * 1000,
                deleted_at=None,
            )
        )


def complete_multipart(
    ctx: Context, principal: Principal, upload_id: str, key: str, parts: list[CompletedPart]
) -> None:
    """Join the parts of the caller's multipart upload into its object.

    Idempotent: a repeated completion (the client lost the first answer, say
    to a 503 from the size read after the join) finds the object already
    stored, and the store answers its size without joining again; the
    declared-size check below decides, as it did the first time.
    """
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads).where(
                uploads.c.multipart_id == upload_id,
                uploads.c.account_id == principal.account_id,
                uploads.c.deleted_at.is_(None),
            )
        ).first()
    # Another account's upload reads exactly like one that does not exist. The
    # spec gives this operation no 404, so "no such upload" is a 400 here.
    if row is None or row.storage_key != key or now_ms() > row.expires_at:
        raise BadRequestError("No such multipart upload (check uploadId and key)")
    # A completion repeated after the object was joined answers as the first
    # did, whatever it lists (docs/api.md): the object is checked first.
    if row.part_size and ctx.storage.size(key) is None:
        _check_all_parts_listed(parts, len(part_lengths(row.file_size, row.part_size)))
    try:
        size = ctx.storage.complete_multipart(key, upload_id, parts)
    except MultipartError as exc:
        raise BadRequestError(f"Cannot complete multipart upload: {exc}") from exc
    if size != row.file_size:
        ctx.storage.delete(key)
        raise BadRequestError(
            f"Cannot complete multipart upload: the parts hold {size} bytes, "
            f"{row.file_size} were declared"
        )


def _check_all_parts_listed(parts: list[CompletedPart], count: int) -> None:
    """Refuse a completion that does not list every part the server planned.

    The parts' lengths were fixed when their links were signed, so with all
    of them listed the object has the declared size. A list missing one
    would join a shorter object (the store drops unlisted parts), whose size
    check would then have to delete it with every part uploaded: refused
    before anything is joined, the upload stays whole for a corrected retry.
    """
    listed = {part.part_number for part in parts}
    planned = set(range(1, count + 1))
    if unknown := sorted(listed - planned):
        has = "1 part" if count == 1 else f"parts 1 to {count}"
        raise BadRequestError(
            f"Cannot complete multipart upload: it has {has}, there is no part {unknown[0]}"
        )
    if missing := sorted(planned - listed):
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise BadRequestError(
            f"Cannot complete multipart upload: list all {count} parts; missing: part {shown}"
        )


def save_direct(
    ctx: Context,
    principal: Principal,
    original_file_name: str,
    file_type: str,
    chunks: Iterator[bytes],
) -> str:
    """Store a file sent inside start-task as an upload; returns its fileName."""
    now = now_ms()
    file_name = generated_file_name(original_file_name or "image", file_type)
    key = storage_key(principal.account_id, file_name)
    try:
        size = ctx.storage.write_stream(key, chunks, ctx.settings.max_upload_bytes)
    except ObjectTooLargeError as exc:
        raise FileSizeExceededError.over(ctx.settings.max_upload_bytes) from exc
    if size == 0:
        ctx.storage.delete(key)
        raise BadRequestError("The file is empty")
    try:
        with ctx.db.begin() as conn:
            conn.execute(
                insert(uploads).values(
                    file_name=file_name,
                    account_id=principal.account_id,
                    original_file_name=(original_file_name or file_name)[:255],
                    file_type=file_type,
                    file_size=size,
                    storage_key=key,
                    created_at=now,
                    url_expires_at=now,
                    expires_at=now + ctx.settings.upload_retention_seconds * 1000,
                    deleted_at=None,
                )
            )
    except BaseException:
        # Without its row the sweeper never learns of the object. Deleting it
        # is safe even if the insert's commit landed unseen: no client was
        # told its name, and a row whose object is gone is swept as usual.
        _delete_quietly(ctx, key)
        raise
    return file_name


def _delete_quietly(ctx: Context, key: str) -> None:
    try:
        ctx.storage.delete(key)
    except Exception:  # the store down too: the object stays, said in the log
        log.warning("could not delete %s after its upload failed to be recorded", key)


def discard(ctx: Context, principal: Principal, file_name: str, unless_named: bool = False) -> None:
    """Forget a direct upload whose task was refused (nothing was charged).

    The object goes first and the row is then marked deleted and purged at
    once: the sweeper has nothing left to do for it (killed in between, the
    row stays live until it expires and the sweeper deletes it as usual).
    With ``unless_named`` it stays when a task names it: after an outage,
    the task's commit may have landed though its answer was lost.
    """
    key = storage_key(principal.account_id, file_name)
    if unless_named:
        with ctx.db.begin() as conn:
            if conn.execute(select(exists().where(task_files.c.source_key == key))).scalar():
                return
    ctx.storage.delete(key)
    now = now_ms()
    with ctx.db.begin() as conn:
        conn.execute(
            update(uploads)
            .where(uploads.c.file_name == file_name, uploads.c.account_id == principal.account_id)
            .values(deleted_at=now, purged_at=now)
        )
