"""Starting a task: check every file, then reserve credits and enqueue at once.

Every file is checked before anything is charged. Reservation, the task row
(which *is* the queue entry) and its file rows are written in one
transaction, so there is never a charged task without a row, or a row
without its reservation.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import accounts, task_files, tasks, uploads
from upscayl_cloud.engine import faces
from upscayl_cloud.engine.catalog import MODELS
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import (
    BadRequestError,
    FaceEnhancementUnavailableError,
    FileSizeExceededError,
    InsufficientCreditsError,
    InvalidFileTypeError,
    MissingFieldsError,
    clip,
)
from upscayl_cloud.services.imagecheck import (
    ALLOWED_TYPES,
    HEAD_BYTES,
    MAX_JPEG_HEADER_BYTES,
    HeaderInfo,
    inspect,
    jpeg_info,
    walk_jpeg,
)
from upscayl_cloud.services.keys import Principal, account_credits
from upscayl_cloud.services.limits import image_limits, output_problem
from upscayl_cloud.storage.base import ObjectMissingError

#: The spec's model enum, which is exactly the engine's catalog (a test
#: checks both against the seed spec).
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: The spec's own example for start-task's ``model`` is ``digital-art``,
#: which its enum spells ``digital-art-4x``. A client that copies the example
#: must work unchanged, so each model is also taken without its ``-4x``; the
#: task records, and reports, the enum's name.
MODEL_ALIASES: dict[str, str] = {
    name.removesuffix("-4x"): name for name in MODEL_NAMES if name.endswith("-4x")
}
SCALES = ("2", "4", "8")
OUTPUT_FORMATS = ("png", "jpg", "webp")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskOptions:
    model: str = "upscayl-standard-4x"
    scale: str = "4"
    save_image_as: str = "jpg"
    enhance_face: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", MODEL_ALIASES.get(self.model, self.model))

    def validate(self) -> None:
        if self.model not in MODEL_NAMES:
            model = clip(self.model)
            raise BadRequestError(f"Unknown model {model!r}; use one of: {', '.join(MODEL_NAMES)}")
        if self.scale not in SCALES:
            raise BadRequestError("scale must be one of '2', '4', '8'")
        if self.save_image_as not in OUTPUT_FORMATS:
            raise BadRequestError("saveImageAs must be one of png, jpg, webp")


@dataclass(frozen=True)
class CheckedFile:
    file_name: str
    original_file_name: str
    file_type: str
    file_size: int
    source_key: str

    @property
    def label(self) -> str:
        """The file as the caller named it, and by its ``fileName``, which
        clients match to tell which file of a batch failed."""
        return _uploaded_label(self.original_file_name, self.file_name)


def _swept(ctx: Context, file_name: str) -> bool:
    """Whether an upload has expired or been swept (see the sweeper)."""
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads.c.deleted_at, uploads.c.expires_at).where(
                uploads.c.file_name == file_name
            )
        ).one()
    return row.deleted_at is not None or now_ms() > row.expires_at


def _uploaded_label(original_file_name: str, file_name: str) -> str:
    return f"File {clip(original_file_name)!r} ({file_name!r})"


def _label(entry: dict[str, Any], index: int) -> str:
    name = entry.get("fileName")
    return f"File {clip(name)!r}" if isinstance(name, str) and name else f"files[{index}]"


#: Bytes one start-task may read past each file's first :data:`HEAD_BYTES`,
#: all its files together: room for 8 JPEGs with the most metadata allowed
#: before their frame header, or dozens with megabytes of it (extended XMP),
#: while 50 hostile files cannot make one request read 400 MB.
MAX_DEEP_HEADER_BYTES_PER_TASK = 64 * 1024 * 1024


@dataclass
class HeaderReads:
    """One start-task's header reads: each stored object read once, however
    often the request names it, and reading past the first bytes bounded for
    the whole request (:data:`MAX_DEEP_HEADER_BYTES_PER_TASK`)."""

    deep_bytes_left: int = field(default_factory=lambda: MAX_DEEP_HEADER_BYTES_PER_TASK)
    seen: dict[str, HeaderInfo | None] = field(default_factory=dict)


def read_header(ctx: Context, key: str, size: int, reads: HeaderReads) -> HeaderInfo | None:
    """The stored object's header info, read past :data:`HEAD_BYTES` only for
    a JPEG whose frame header (SOF) lies further on.

    Each further read fetches only the bytes after those already read, at
    least as many again: at most six reads and :data:`MAX_JPEG_HEADER_BYTES`
    for the most hostile file, while the walk itself only looks at segment
    headers. A read that comes back short (the object changed) is taken as
    the whole file, so the loop always ends.
    """
    if key in reads.seen:
        return reads.seen[key]
    head = ctx.storage.read_head(key, HEAD_BYTES)
    info = inspect(head, size if len(head) >= HEAD_BYTES else len(head))
    while info is not None and info.pending is not None and info.pending.need is not None:
        walk = info.pending
        length = min(size, MAX_JPEG_HEADER_BYTES, max(walk.need, 2 * len(head)))
        if length - len(head) > reads.deep_bytes_left:
            info = HeaderInfo(
                "image/jpeg", None, None, refused=DEEP_HEADERS_REFUSED.format(at=len(head))
            )
            break
        more = ctx.storage.read_head(key, length - len(head), start=len(head))
        reads.deep_bytes_left -= len(more)
        head += more
        total = size if len(head) >= length else len(head)
        info = jpeg_info(walk_jpeg(head, total, walk.pos, walk.segments))
    reads.seen[key] = info
    return info


#: Why a JPEG's frame header was not looked for once the request's budget ran out.
UPLOAD_EXPIRED = "the upload has expired; upload it again"
DEEP_HEADERS_REFUSED = (
    "has no frame header in its first {at} bytes, and this task's files already "
    "needed as much metadata read as one task may; send it in a task of its own, "
    "or strip its metadata"
)


def check_file(
    ctx: Context,
    principal: Principal,
    options: TaskOptions,
    entry: Any,
    index: int,
    reads: HeaderReads | None = None,
) -> CheckedFile:
    """One previously uploaded file, checked for ownership, expiry, type and limits."""
    limits = image_limits(ctx.settings)
    if not isinstance(entry, dict):
        raise BadRequestError(f"files[{index}] must be an object with fileName")
    label = _label(entry, index)
    file_name = entry.get("fileName")
    if not isinstance(file_name, str) or not file_name:
        raise MissingFieldsError(f"Required fields missing: files[{index}].fileName")
    declared_type = entry.get("fileType")
    if declared_type is not None and declared_type not in ALLOWED_TYPES:
        raise InvalidFileTypeError(f"{label}: unsupported file type. Allowed: JPEG, PNG, WEBP")
    declared_size = entry.get("fileSize")
    if declared_size is not None and (
        not isinstance(declared_size, int) or isinstance(declared_size, bool)
    ):
        raise BadRequestError(f"{label}: fileSize must be an integer")
    if isinstance(declared_size, int) and declared_size > ctx.settings.max_upload_bytes:
        raise FileSizeExceededError.over(ctx.settings.max_upload_bytes, label)
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads).where(
                uploads.c.file_name == file_name,
                uploads.c.account_id == principal.account_id,
                uploads.c.deleted_at.is_(None),
            )
        ).first()
    # Someone else's upload is reported exactly like a missing one.
    if row is None:
        raise BadRequestError(
            f"{label}: no such uploaded file; name each file by the fileName that "
            "get-upload-url returned for it (not the file's original name); an upload "
            "that waited past its expiry is deleted, and must be sent again"
        )
    # From here on the file is named as the caller named it, as the worker's
    # errors do (a direct upload's fileName is one the server generated), and
    # by its fileName, which clients match to tell which file of a batch failed.
    label = _uploaded_label(row.original_file_name, row.file_name)
    if now_ms() > row.expires_at:
        raise BadRequestError(f"{label}: {UPLOAD_EXPIRED}")
    if declared_type is not None and declared_type != row.file_type:
        raise InvalidFileTypeError(
            f"{label}: declared {declared_type}, uploaded as {row.file_type}"
        )
    try:
        size = ctx.storage.size(row.storage_key)
        if size is None:
            raise ObjectMissingError(row.storage_key)
        if size > ctx.settings.max_upload_bytes:
            raise FileSizeExceededError.over(ctx.settings.max_upload_bytes, label)
        if size != row.file_size or (isinstance(declared_size, int) and declared_size != size):
            raise BadRequestError(
                f"{label}: the stored file has {size} bytes, not the declared size"
            )
        info = read_header(ctx, row.storage_key, size, reads or HeaderReads())
    except ObjectMissingError:
        # Never uploaded, or expired and swept since the check above.
        swept = _swept(ctx, row.file_name)
        raise BadRequestError(
            f"{label}: {UPLOAD_EXPIRED if swept else 'the file has not been uploaded yet'}"
        ) from None
    if info is None:
        raise InvalidFileTypeError(f"{label}: not a JPEG, PNG or WebP image")
    if info.mime_type != row.file_type:
        raise InvalidFileTypeError(f"{label}: the file is {info.mime_type}, not {row.file_type}")
    # A file without a readable size is refused here: the worker could only
    # fail it, after its credits were reserved.
    if info.broken is not None:
        raise InvalidFileTypeError(f"{label} {info.broken}")
    if info.refused is not None or info.width is None or info.height is None:
        raise BadRequestError(f"{label} {info.refused or 'has no readable image size'}")
    if info.width < 1 or info.height < 1:
        raise BadRequestError(f"{label}: the image header gives no size")
    problem = output_problem(
        info.width, info.height, int(options.scale), options.save_image_as, limits
    )
    if problem is not None:
        raise BadRequestError(f"{label}: {problem}")
    return CheckedFile(
        file_name=row.file_name,
        original_file_name=row.original_file_name,
        file_type=row.file_type,
        file_size=size,
        source_key=row.storage_key,
    )


def _next_created_at(conn: Connection, account_id: str, now: int) -> int:
    """A timestamp strictly after this account's previous task (see history paging).

    One UPDATE ... RETURNING, so concurrent starts serialise on the account row
    on PostgreSQL too (a read-then-write would hand two tasks the same stamp).
    """
    following = accounts.c.last_task_at + 1
    return conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(last_task_at=case((following > now, following), else_=now))
        .returning(accounts.c.last_task_at)
    ).scalar_one()


def _lock_originals(conn: Connection, account_id: str, checked: list[CheckedFile]) -> None:
    """Lock the originals' rows and check they are still there: one may have
    expired, and been swept, while its header was read (see the sweeper).
    Locked in name order, so two start-tasks naming the same files never
    deadlock."""
    names = sorted({f.file_name for f in checked})
    alive = set(
        conn.execute(
            select(uploads.c.file_name)
            .where(
                uploads.c.file_name.in_(names),
                uploads.c.account_id == account_id,
                uploads.c.deleted_at.is_(None),
                uploads.c.expires_at >= now_ms(),
            )
            .order_by(uploads.c.file_name)
            .with_for_update()
        ).scalars()
    )
    for f in checked:
        if f.file_name not in alive:
            raise BadRequestError(f"{f.label}: {UPLOAD_EXPIRED}")


def check_affordable(ctx: Context, principal: Principal, images: int) -> int:
    """The price of ``images``; 402 when the account has less.

    A first look, made before anything costly is read (file headers, a
    direct upload's body): refusing only at the reservation would make the
    work free to ask for. The reservation in :func:`start_task` stays the
    check that counts.
    """
    cost = ctx.settings.credits_per_image * images
    balance = account_credits(ctx, principal.account_id)
    if balance < cost:
        raise _short_of_credits(cost, balance)
    return cost


def _short_of_credits(cost: int, balance: int) -> InsufficientCreditsError:
    """402 saying how far short the account is, and who can fix it."""
    return InsufficientCreditsError(
        f"Not enough credits to process request: {cost} needed, {balance} left "
        "(the server's operator adds credits)"
    )


def start_task(ctx: Context, principal: Principal, options: TaskOptions, entries: list[Any]) -> str:
    """Check the files, reserve their price and enqueue the task; returns its id."""
    options.validate()
    if options.enhance_face:
        reason = faces.unavailable_reason(
            faces.models_dir(ctx.settings.data_dir), ctx.settings.face_model
        )
        if reason is not None:
            raise FaceEnhancementUnavailableError(reason)
    if not entries:
        raise MissingFieldsError("Required fields missing: file or files")
    if len(entries) > ctx.settings.max_files_per_task:
        raise BadRequestError(f"At most {ctx.settings.max_files_per_task} files per task")
    # A request the account cannot pay for reads no file: checking headers
    # is the expensive part, and must not be free to ask for.
    cost = check_affordable(ctx, principal, len(entries))
    reads = HeaderReads()
    checked = [check_file(ctx, principal, options, e, i, reads) for i, e in enumerate(entries)]
    task_id = str(uuid.uuid4())
    now = now_ms()
    with ctx.db.begin() as conn:
        _lock_originals(conn, principal.account_id, checked)
        reserved = conn.execute(
            update(accounts)
            .where(accounts.c.id == principal.account_id, accounts.c.credits >= cost)
            .values(credits=accounts.c.credits - cost)
        )
        if reserved.rowcount != 1:  # spent meanwhile by a request of the same account
            balance = conn.execute(
                select(accounts.c.credits).where(accounts.c.id == principal.account_id)
            ).scalar_one()
            raise _short_of_credits(cost, int(balance))
        created = _next_created_at(conn, principal.account_id, now)
        conn.execute(
            insert(tasks).values(
                id=task_id,
                account_id=principal.account_id,
                status="pending",
                model=options.model,
                scale=int(options.scale),
                save_image_as=options.save_image_as,
                enhance_face=options.enhance_face,
                batch_mode=len(checked) > 1,
                progress=0,
                attempts=0,
                lease_until=0,
                credits_reserved=cost,
                credits_charged=0,
                created_at=created,
                updated_at=created,
            )
        )
        conn.execute(
            insert(task_files),
            [
                {
                    "task_id": task_id,
                    "position": position,
                    "file_name": f.file_name,
                    "original_file_name": f.original_file_name,
                    "file_type": f.file_type,
                    "file_size": f.file_size,
                    "source_key": f.source_key,
                    "status": "pending",
                }
                for position, f in enumerate(checked)
            ],
        )
    # Logged under the request's id: what ties a caller's X-Request-ID to
    # the task's id, which every later line (the worker's) names.
    log.info(
        "task %s started: %d file(s), %s at %sx, %d credit(s) reserved",
        task_id,
        len(checked),
        options.model,
        options.scale,
        cost,
    )
    return task_id


def queue_depth(ctx: Context) -> int:
    with ctx.db.begin() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(tasks).where(tasks.c.status == "pending")
            ).scalar_one()
        )
