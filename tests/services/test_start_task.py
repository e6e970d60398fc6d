"""start-task's checks and its credit reservation, on real SQLite and files."""

from __future__ import annotations

import struct

import pytest
import pyvips
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from support.context import new_principal
from support.images import png_bytes, png_header_only
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.services import keys, uploads
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import (
    BadRequestError,
    FileSizeExceededError,
    InsufficientCreditsError,
    InvalidFileTypeError,
    MissingFieldsError,
)
from upscayl_cloud.services.imagecheck import HEAD_BYTES, MAX_JPEG_HEADER_BYTES
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.tasks import TaskOptions


def _upload(
    ctx: Context, who: Principal, data: bytes, file_type: str = "image/png", name: str = "a.png"
) -> str:
    link = uploads.request_upload(ctx, who, "http://x", name, file_type, len(data))
    ctx.storage.write_stream(
        uploads.storage_key(who.account_id, link.file_name), iter([data]), 10**9
    )
    return link.file_name


def test_reserves_credits_in_the_creating_transaction(ctx: Context) -> None:
    _key, who = new_principal(ctx, credits=3)
    names = [_upload(ctx, who, png_bytes()) for _ in range(2)]
    task_id = task_service.start_task(ctx, who, TaskOptions(), [{"fileName": n} for n in names])
    assert keys.account_credits(ctx, who.account_id) == 1
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.status, row.credits_reserved, row.batch_mode) == ("pending", 2, True)
    with pytest.raises(InsufficientCreditsError):
        task_service.start_task(ctx, who, TaskOptions(), [{"fileName": n} for n in names])
    assert keys.account_credits(ctx, who.account_id) == 1


def test_checks_every_file_before_charging(ctx: Context, principal: Principal) -> None:
    good = _upload(ctx, principal, png_bytes())
    liar = _upload(ctx, principal, b"GIF89a not a png")
    with pytest.raises(InvalidFileTypeError, match="not a JPEG, PNG or WebP"):
        task_service.start_task(
            ctx, principal, TaskOptions(), [{"fileName": good}, {"fileName": liar}]
        )
    assert keys.account_credits(ctx, principal.account_id) == 10


@pytest.mark.parametrize(
    ("entry", "error", "text"),
    [
        ({}, MissingFieldsError, "fileName"),
        # The hint: naming the original file is the usual slip by hand.
        (
            {"fileName": "missing.png"},
            BadRequestError,
            "no such uploaded file; name each file by the fileName that get-upload-url returned",
        ),
        ({"fileName": "X", "fileType": "image/gif"}, InvalidFileTypeError, "unsupported"),
        ({"fileName": "X", "fileSize": 10**9}, FileSizeExceededError, "100MB"),
        ("just a string", BadRequestError, "must be an object"),
    ],
)
def test_bad_entries(
    ctx: Context, principal: Principal, entry: object, error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        task_service.start_task(ctx, principal, TaskOptions(), [entry])


def test_other_accounts_upload_reads_as_missing(ctx: Context, principal: Principal) -> None:
    _key, other = new_principal(ctx, name="other")
    theirs = _upload(ctx, other, png_bytes())
    with pytest.raises(BadRequestError, match="no such uploaded file"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": theirs}])


def test_not_yet_uploaded_wrong_type_and_pixel_bomb(ctx: Context, principal: Principal) -> None:
    link = uploads.request_upload(ctx, principal, "http://x", "a.png", "image/png", 10)
    with pytest.raises(BadRequestError, match="not been uploaded"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": link.file_name}])
    as_jpeg = _upload(ctx, principal, png_bytes(), file_type="image/jpeg")
    with pytest.raises(InvalidFileTypeError, match="image/png, not image/jpeg"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": as_jpeg}])
    bomb = _upload(ctx, principal, png_header_only(30000, 30000))
    with pytest.raises(BadRequestError, match="exceeds the limit"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": bomb}])


@pytest.mark.parametrize(
    "options",
    [TaskOptions(model="nope"), TaskOptions(scale="3"), TaskOptions(save_image_as="gif")],
)
def test_options_are_validated(ctx: Context, principal: Principal, options: TaskOptions) -> None:
    with pytest.raises(BadRequestError) as refused:
        task_service.start_task(ctx, principal, options, [{"fileName": "x"}])
    if options.model == "nope":  # the message lists what the caller may send instead
        assert "Unknown model 'nope'; use one of: upscayl-standard-4x, " in str(refused.value)


def test_created_at_strictly_increases_per_account(ctx: Context, principal: Principal) -> None:
    name = _upload(ctx, principal, png_bytes())
    for _ in range(5):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
    with ctx.db.begin() as conn:
        stamps = [r.created_at for r in conn.execute(select(tasks.c.created_at)).all()]
    assert len(set(stamps)) == 5


def test_concurrent_start_tasks_never_overdraw(ctx: Context) -> None:
    import threading

    _key, who = new_principal(ctx, credits=5)
    name = _upload(ctx, who, png_bytes())
    outcomes: list[str] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            task_service.start_task(ctx, who, TaskOptions(), [{"fileName": name}])
            result = "ok"
        except InsufficientCreditsError as refused:
            # Refused at the first look or at the reservation (a race lost
            # there reads the balance in its own transaction): the same words.
            result = "402" if "1 needed, 0 left" in refused.public_message else str(refused)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=start) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["402"] * 5 + ["ok"] * 5
    assert keys.account_credits(ctx, who.account_id) == 0


def test_concurrent_starts_get_distinct_timestamps(ctx: Context) -> None:
    import threading

    _key, who = new_principal(ctx, credits=20)
    name = _upload(ctx, who, png_bytes())
    threads = [
        threading.Thread(
            target=task_service.start_task, args=(ctx, who, TaskOptions(), [{"fileName": name}])
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with ctx.db.begin() as conn:
        stamps = [r.created_at for r in conn.execute(select(tasks.c.created_at)).all()]
    assert len(stamps) == 8 and len(set(stamps)) == 8


def _real_jpeg(claimed: tuple[int, int] | None = None, metadata: int = 0) -> bytes:
    """A real 16x16 JPEG (libvips), its SOF patched to claim ``claimed`` (width,
    height), after ``metadata`` full APP15 segments (~64 KiB each) that every
    decoder skips: the frame header then lies past the first bytes read."""
    data = bytes((pyvips.Image.black(16, 16, bands=3) + 90).cast("uchar").jpegsave_buffer(Q=80))
    if claimed is not None:
        sof = data.index(b"\xff\xc0")
        data = data[: sof + 5] + struct.pack(">HH", claimed[1], claimed[0]) + data[sof + 9 :]
    app15 = b"\xff\xef" + struct.pack(">H", 65535) + b"\x00" * 65533
    return data[:2] + app15 * metadata + data[2:]


def _reads(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the real storage's reads during the test."""
    lengths: list[int] = []
    real = ctx.storage.read_head

    def read_head(key: str, length: int, start: int = 0) -> bytes:
        data = real(key, length, start=start)
        lengths.append(len(data))
        return data

    monkeypatch.setattr(ctx.storage, "read_head", read_head)
    return lengths


def test_a_jpeg_frame_header_past_the_first_bytes_is_still_checked(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = _real_jpeg(claimed=(60000, 60000), metadata=5)
    assert len(bomb) > HEAD_BYTES
    name = _upload(ctx, principal, bomb, "image/jpeg", "bomb.jpg")
    with pytest.raises(BadRequestError, match="exceeds the limit of 50000000 pixels"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
    assert keys.account_credits(ctx, principal.account_id) == 10
    # The same metadata before an honest frame header is accepted, in two reads
    # (the second of only the bytes after the first).
    reads = _reads(ctx, monkeypatch)
    honest = _real_jpeg(metadata=5)
    fine = _upload(ctx, principal, honest, "image/jpeg", "fine.jpg")
    task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": fine}])
    assert keys.account_credits(ctx, principal.account_id) == 9
    assert reads == [HEAD_BYTES, len(honest) - HEAD_BYTES]


def test_a_jpeg_frame_header_too_far_in_is_refused_after_bounded_reads(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    far = _real_jpeg(metadata=MAX_JPEG_HEADER_BYTES // 65537 + 1)
    name = _upload(ctx, principal, far, "image/jpeg", "far.jpg")
    reads = _reads(ctx, monkeypatch)
    far_away = r"'far.jpg' \('[0-9a-f]{12}-far.jpg'\) has its JPEG frame header .* 8 MiB"
    with pytest.raises(BadRequestError, match=far_away):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
    assert keys.account_credits(ctx, principal.account_id) == 10
    assert len(reads) <= 6 and sum(reads) <= MAX_JPEG_HEADER_BYTES


@pytest.mark.parametrize(
    ("data", "file_type", "kind"),
    [
        (png_bytes()[:8], "image/png", "PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", "image/jpeg", "JPEG"),
        (b"RIFF\x04\x00\x00\x00WEBP", "image/webp", "WebP"),
        (_real_jpeg(metadata=5)[:300_000], "image/jpeg", "JPEG"),
    ],
)
def test_a_header_that_ends_before_its_dimensions_is_refused(
    ctx: Context, principal: Principal, data: bytes, file_type: str, kind: str
) -> None:
    name = _upload(ctx, principal, data, file_type, "x.img")
    with pytest.raises(InvalidFileTypeError) as refused:
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
    assert refused.value.public_message == (
        f"File 'x.img' ({name!r}) is not a complete {kind} image: "
        "its header ends before its dimensions"
    )
    assert keys.account_credits(ctx, principal.account_id) == 10


def test_a_jpeg_without_a_frame_header_is_refused(ctx: Context, principal: Principal) -> None:
    real = _real_jpeg()
    sof = real.index(b"\xff\xc0")
    (length,) = struct.unpack(">H", real[sof + 2 : sof + 4])
    name = _upload(ctx, principal, real[:sof] + real[sof + 2 + length :], "image/jpeg")
    with pytest.raises(InvalidFileTypeError, match="no frame header \\(SOF\\) before its image"):
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
    assert keys.account_credits(ctx, principal.account_id) == 10


def test_a_direct_upload_is_named_as_the_caller_named_it(
    ctx: Context, principal: Principal
) -> None:
    stored = uploads.save_direct(
        ctx, principal, "b.png", "image/png", iter([png_header_only(100000, 100000)])
    )
    with pytest.raises(BadRequestError) as refused:
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": stored}])
    # As the caller named it, and by the fileName clients match in a batch.
    assert refused.value.public_message.startswith(
        f"File 'b.png' ({stored!r}): 100000x100000 pixels exceeds"
    )
    assert keys.account_credits(ctx, principal.account_id) == 10


def test_a_direct_upload_whose_row_fails_leaves_no_object(ctx: Context) -> None:
    """The object was written before its row: a failed insert (here a real
    one, an account the database does not have) left an object no sweeper
    would ever find."""
    ghost = Principal(account_id="00000000-0000-0000-0000-000000000000", key_id="k")
    with pytest.raises(IntegrityError):
        uploads.save_direct(ctx, ghost, "a.png", "image/png", iter([png_bytes()]))
    stored = ctx.settings.resolved_storage_dir
    assert not [path for path in stored.rglob("*") if path.is_file() and "uploads" in path.parts]


def test_messages_echo_at_most_a_hundred_characters_of_a_name(
    ctx: Context, principal: Principal
) -> None:
    """A 299-character file name or model name is recognisable in the
    message without being sent back whole."""
    long_name = "x" * 299
    with pytest.raises(BadRequestError) as refused:
        task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": long_name}])
    assert "x" * 100 + "…" in refused.value.public_message
    assert "x" * 101 not in refused.value.public_message
    with pytest.raises(BadRequestError) as unknown:
        task_service.start_task(ctx, principal, TaskOptions(model="m" * 5000), [{"fileName": "x"}])
    assert "m" * 100 + "…" in unknown.value.public_message
    assert "m" * 101 not in unknown.value.public_message


def test_a_request_the_account_cannot_pay_for_reads_no_file(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking headers is the costly part of start-task: 402 comes first."""
    _key, poor = new_principal(ctx, name="poor", credits=1)
    name = _upload(ctx, poor, _real_jpeg(metadata=5), "image/jpeg", "deep.jpg")
    reads = _reads(ctx, monkeypatch)
    with pytest.raises(InsufficientCreditsError, match="2 needed, 1 left"):
        task_service.start_task(ctx, poor, TaskOptions(), [{"fileName": name}] * 2)
    assert reads == []
    assert keys.account_credits(ctx, poor.account_id) == 1


def test_a_file_named_several_times_is_read_once(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _upload(ctx, principal, _real_jpeg(metadata=5), "image/jpeg", "deep.jpg")
    reads = _reads(ctx, monkeypatch)
    task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": name}] * 3)
    assert len(reads) == 2  # its first bytes, then the rest of its header
    assert keys.account_credits(ctx, principal.account_id) == 7


def test_reading_deep_headers_is_bounded_per_request(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a request's files have used the budget for reading past their
    first bytes, a further deep header is refused, not read; a later task
    has its own budget."""
    monkeypatch.setattr(task_service, "MAX_DEEP_HEADER_BYTES_PER_TASK", 100 * 1024)
    first, second = (
        _upload(ctx, principal, _real_jpeg(metadata=5), "image/jpeg", f"{n}.jpg")
        for n in ("one", "two")
    )
    both = [{"fileName": first}, {"fileName": second}]
    with pytest.raises(BadRequestError, match=r"'two\.jpg' .* send it in a task of its own"):
        task_service.start_task(ctx, principal, TaskOptions(), both)
    assert keys.account_credits(ctx, principal.account_id) == 10
    task_service.start_task(ctx, principal, TaskOptions(), [{"fileName": second}])
    assert keys.account_credits(ctx, principal.account_id) == 9
