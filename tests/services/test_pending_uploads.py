"""get-upload-url caps the bytes an account's uploads hold while no task names
them: uploads cost no credits, so without the cap a key with none could park
100 uploads an hour of 100 MB each for the whole retention. On SQLite and
PostgreSQL, concurrent requests included."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event, select, update

from support.context import make_settings, new_principal
from support.images import png_bytes
from support.postgres import until_a_lock_is_awaited
from upscayl_cloud.config import Settings
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import uploads as uploads_table
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services import tasks, uploads
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.errors import RateLimitExceededError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.results import fail_task

#: Largest file, and the cap: two largest files and half of a third wait at most.
FILE = 2000
CAP = 5000
DAY = 24 * 3600


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        max_upload_bytes=FILE,
        max_pending_upload_bytes=CAP,
    )


def _ask(ctx: Context, who: Principal, size: int, multipart: bool | None = None) -> str:
    link = uploads.request_upload(ctx, who, "http://x", "a.png", "image/png", size, multipart)
    return link.file_name


def _refused(ctx: Context, who: Principal, size: int) -> RateLimitExceededError:
    with pytest.raises(RateLimitExceededError) as refused:
        _ask(ctx, who, size)
    return refused.value


def _expire_at(ctx: Context, file_name: str, expires_at: int) -> None:
    with ctx.db.begin() as conn:
        conn.execute(
            update(uploads_table)
            .where(uploads_table.c.file_name == file_name)
            .values(expires_at=expires_at)
        )


def test_waiting_uploads_are_capped_per_account(ctx: Context, principal: Principal) -> None:
    _ask(ctx, principal, FILE)
    _ask(ctx, principal, FILE, multipart=True)
    refusal = _refused(ctx, principal, FILE)
    assert refusal.status_code == 429 and refusal.code == "RATE_LIMIT_EXCEEDED"
    assert "Start tasks for the files uploaded" in refusal.public_message
    # The oldest upload expires in a day; then there is room again.
    assert DAY - 60 <= refusal.retry_after_seconds <= DAY + 1
    assert refusal.public_message.endswith("(in about 24 hours)")
    _ask(ctx, principal, CAP - 2 * FILE)  # exactly up to the cap still fits
    _ask(ctx, new_principal(ctx)[1], FILE)  # another account has its own room


def test_retry_after_is_when_enough_of_the_oldest_expire(
    ctx: Context, principal: Principal
) -> None:
    names = [_ask(ctx, principal, size) for size in (1000, 2000, 2000)]
    now = now_ms()
    for minutes, name in enumerate(names, start=1):
        _expire_at(ctx, name, now + minutes * 60_000)
    # 2000 more needs 2000 freed: the first (1000) is not enough, the second is.
    assert 110 <= _refused(ctx, principal, 2000).retry_after_seconds <= 121
    # 1000 more: the first alone frees enough.
    assert 50 <= _refused(ctx, principal, 1000).retry_after_seconds <= 61


def test_uploads_a_task_names_stop_counting(ctx: Context, principal: Principal) -> None:
    data = png_bytes()
    named = _ask(ctx, principal, len(data))
    ctx.storage.write_stream(uploads.storage_key(principal.account_id, named), iter([data]), FILE)
    _ask(ctx, principal, FILE)
    _ask(ctx, principal, CAP - FILE - len(data))
    _refused(ctx, principal, len(data))
    tasks.start_task(ctx, principal, tasks.TaskOptions(), [{"fileName": named}])
    _ask(ctx, principal, len(data))


def test_uploads_of_a_failed_task_count_again(ctx: Context, principal: Principal) -> None:
    """A failed file is refunded: with its upload counted as named, a key with
    one credit parked undecodable uploads past the cap, one failed task
    after another, at no cost."""
    data = png_bytes()
    named = _ask(ctx, principal, len(data))
    ctx.storage.write_stream(uploads.storage_key(principal.account_id, named), iter([data]), FILE)
    _ask(ctx, principal, FILE)
    _ask(ctx, principal, CAP - FILE - len(data))
    task_id = tasks.start_task(ctx, principal, tasks.TaskOptions(), [{"fileName": named}])
    held = claim(ctx.db, "worker", 30, 3)
    assert held is not None and held.task_id == task_id
    assert fail_task(ctx, held, "the image could not be decoded")
    _refused(ctx, principal, len(data))  # its upload waits for a task again
    tasks.start_task(ctx, principal, tasks.TaskOptions(), [{"fileName": named}])
    _ask(ctx, principal, len(data))  # named by a task that may be paid for


def test_deleted_and_expired_uploads_stop_counting(ctx: Context, principal: Principal) -> None:
    discarded, expired = _ask(ctx, principal, FILE), _ask(ctx, principal, FILE)
    _refused(ctx, principal, FILE)
    uploads.discard(ctx, principal, discarded)
    _ask(ctx, principal, FILE)
    _refused(ctx, principal, FILE)
    _expire_at(ctx, expired, now_ms() - 1)
    _ask(ctx, principal, FILE)


def test_concurrent_requests_never_overshoot_the_cap(ctx: Context, principal: Principal) -> None:
    """One request is held inside its transaction, its row written but not
    committed; a second, which read the cap before that row existed, must
    wait for it and then be refused, not be let through beside it."""
    _ask(ctx, principal, FILE)
    inside, go_on = threading.Event(), threading.Event()

    def hold_the_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO UPLOADS") and not inside.is_set():
            inside.set()
            go_on.wait(30)

    outcomes: list[object] = []

    def request() -> None:
        try:
            outcomes.append(_ask(ctx, principal, FILE))
        except RateLimitExceededError as exc:
            outcomes.append(exc)

    first, second = threading.Thread(target=request), threading.Thread(target=request)
    event.listen(ctx.db, "before_cursor_execute", hold_the_insert)
    try:
        first.start()
        assert inside.wait(30), "the first request never reached its insert"
        second.start()
        until_a_lock_is_awaited(ctx.db, "the second request (on the account's row)")
    finally:
        go_on.set()
        for thread in (first, second):
            if thread.ident is not None:
                thread.join(30)
        event.remove(ctx.db, "before_cursor_execute", hold_the_insert)
    assert len(outcomes) == 2
    assert isinstance(outcomes[0], str), outcomes
    assert isinstance(outcomes[1], RateLimitExceededError), outcomes


def test_the_default_cap_holds_two_full_batches_whatever_their_limits(tmp_path: Path) -> None:
    """A fixed default refused one honest batch of 50 large files (2 GiB), and
    refused to start at all where the file limit was raised above it."""
    assert make_settings(tmp_path).pending_upload_cap == 2 * 50 * 104_857_600
    raised = make_settings(tmp_path, max_upload_bytes=3 * 1024**3, max_files_per_task=10)
    assert raised.pending_upload_cap == 2 * 10 * 3 * 1024**3
    chosen = make_settings(tmp_path, max_upload_bytes=FILE, max_pending_upload_bytes=CAP)
    assert chosen.pending_upload_cap == CAP


def test_a_cap_below_one_file_is_refused(tmp_path: Path) -> None:
    """It would refuse files of an allowed size forever, with a 429."""
    with pytest.raises(ValidationError, match="MAX_PENDING_UPLOAD_BYTES"):
        make_settings(tmp_path, max_upload_bytes=FILE, max_pending_upload_bytes=FILE - 1)


def test_uploads_never_sent_stop_counting_once_their_link_is_long_expired(
    ctx: Context, principal: Principal
) -> None:
    """A client that asked for links and crashed is not held at the cap for
    a day by bytes that never came; one whose file did come still counts."""
    sent, unsent = _ask(ctx, principal, FILE), _ask(ctx, principal, FILE)
    ctx.storage.write_stream(uploads.storage_key(principal.account_id, sent), iter([b"x"]), FILE)
    _refused(ctx, principal, FILE)

    def link_expired(ago_ms: int) -> None:
        with ctx.db.begin() as conn:
            conn.execute(update(uploads_table).values(url_expires_at=now_ms() - ago_ms))

    link_expired(60_000)  # a PUT begun just before may still be arriving
    _refused(ctx, principal, FILE)
    link_expired(uploads.UNSENT_GRACE_MS + 60_000)
    _ask(ctx, principal, FILE)  # the unsent one is forgotten...
    _refused(ctx, principal, FILE)  # ...the sent one still counts
    with ctx.db.begin() as conn:
        deleted = dict(
            conn.execute(
                select(uploads_table.c.file_name, uploads_table.c.deleted_at).where(
                    uploads_table.c.file_name.in_((sent, unsent))
                )
            ).all()
        )
    assert deleted[sent] is None and deleted[unsent] is not None


def test_an_upload_link_never_outlives_its_original(tmp_path: Path) -> None:
    """A PUT after the sweeper purged the row would store an object that
    nothing deletes: the link expires with the original's retention."""
    settings = make_settings(
        tmp_path / "data", upload_url_ttl_seconds=3600, upload_retention_seconds=60
    )
    ctx = build_context(settings)
    try:
        who = new_principal(ctx)[1]
        before = now_ms()
        link = uploads.request_upload(ctx, who, "http://x", "a.png", "image/png", 10)
        assert before + 60_000 <= link.expires_at <= now_ms() + 60_000
        with ctx.db.begin() as conn:
            row = conn.execute(
                select(uploads_table).where(uploads_table.c.file_name == link.file_name)
            ).one()
        assert row.url_expires_at <= row.expires_at
    finally:
        ctx.db.dispose()
