"""start-task's checks and its credit reservation, on real SQLite and files."""

from __future__ import annotations

import pytest
from sqlalchemy import select

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
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.tasks import TaskOptions


def _upload(ctx: Context, who: Principal, data: bytes, file_type: str = "image/png") -> str:
    link = uploads.request_upload(ctx, who, "http://x", "a.png", file_type, len(data))
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
        ({"fileName": "missing.png"}, BadRequestError, "no such uploaded file"),
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
    with pytest.raises(BadRequestError):
        task_service.start_task(ctx, principal, options, [{"fileName": "x"}])


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
        except InsufficientCreditsError:
            result = "402"
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
