"""A worker whose object store is down hands the task back instead of failing
it, against a real database and a real refused connection (an S3 endpoint on a
loopback port nobody listens on): the failure is provoked, not mocked.

So does a worker whose work disk is full. That one cannot be provoked here
(mounting a small file system takes privileges we lack), so its stand-ins
are named as such: ``shutil.disk_usage`` reporting little free space, and
plane or file writes sent to ``/dev/full``, which fails every write with a
real ENOSPC from the kernel."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from support.context import make_settings, new_principal
from support.disk import disk_with_little_free, fill, small_disk
from support.tasks import queued_task
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.diskspace import WORK_SPACE, allocated_bytes
from upscayl_cloud.engine import planeio, planes
from upscayl_cloud.queue.lease import Claim, claim
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.storage.base import StorageUnavailableError
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client
from upscayl_cloud.workdirs import process_work_dir
from upscayl_cloud.worker import handle, unavailable

LEASE = 0.5  # the backoff is a lease's length: short here to see the retry


def _closed_port() -> int:
    """A loopback port with no listener: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[Context]:
    context = build_context(
        make_settings(tmp_path / "data", database_url=database_url, lease_seconds=LEASE)
    )
    yield context
    context.db.dispose()


@pytest.fixture
def down(live: Context) -> Context:
    """The same service, its object store unreachable (connection refused)."""
    client = make_client(f"http://127.0.0.1:{_closed_port()}", "us-east-1", "key", "secret")
    return replace(live, storage=S3Storage(client, "upscayl-test"))


def _row(ctx: Context, task_id: str) -> object:
    with ctx.db.begin() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def test_unreachable_store_requeues_with_backoff_then_completes(
    live: Context, down: Context
) -> None:
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    first = claim(live.db, "w", LEASE, 3)
    before = now_ms()
    handle(down, first)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.error) == ("pending", 1, None)
    # Not due yet: a dead store must not spin. The backoff (0.5 s) runs from
    # the hand-back, and cleaning the attempt's outputs on the dead store
    # comes after it, so on a busy machine the task may be due already when
    # the test looks: a claim counts as early only when it came before.
    assert row.lease_until >= before + LEASE * 1000
    second = claim(live.db, "w", 30, 3)
    assert second is None or now_ms() >= row.lease_until, "claimed before it was due"
    assert keys.account_credits(live, principal.account_id) == 9  # still reserved

    deadline = time.monotonic() + 30
    while second is None:
        assert time.monotonic() < deadline, "the task never became due again"
        time.sleep(0.05)
        second = claim(live.db, "w", 30, 3)
    assert second.attempt == 2
    handle(live, second)  # the store is back
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", 2, 1)
    assert keys.account_credits(live, principal.account_id) == 9


class _DeletesFail:
    """The live store, except that deleting fails as if it had just gone
    away: a stand-in, as the instant right after a commit cannot be picked
    for a real outage."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete_prefix(self, prefix: str) -> None:
        raise StorageUnavailableError("the store went away after the commit")


def test_a_store_failing_after_the_outcome_is_committed_changes_nothing_of_it(
    live: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting an earlier attempt's outputs comes after the task's outcome
    is committed: failing then used to raise out of ``handle``, logged as
    "could not record its outcome" though it was recorded."""
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    assert claim(live.db, "lost", LEASE, 3) is not None
    deadline = time.monotonic() + 30
    while (second := claim(live.db, "w", 30, 3)) is None:
        assert time.monotonic() < deadline, "the lost lease never expired"
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="upscayl_cloud.worker"):
        handle(replace(live, storage=_DeletesFail(live.storage)), second)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", 2, 1)
    assert "attempt 1: outputs not removed yet" in caplog.text


def test_outage_through_the_last_attempt_fails_and_refunds(live: Context, down: Context) -> None:
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    for attempt in (1, 2, 3):
        deadline = time.monotonic() + 30
        while (held := claim(live.db, "w", 30, 3)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert held.attempt == attempt
        handle(down, held)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("failed", 3, 0)
    assert "unavailable on all 3 attempts" in row.error
    assert keys.account_credits(live, principal.account_id) == 10  # refunded
    assert claim(live.db, "w", 30, 3) is None


def test_missing_input_is_still_a_permanent_failure(live: Context) -> None:
    """Guard: an answer from the store ("no such object") is not an outage."""
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    with live.db.begin() as conn:
        key = conn.execute(
            select(task_files.c.source_key).where(task_files.c.task_id == task_id)
        ).scalar_one()
    live.storage.delete(key)
    handle(live, claim(live.db, "w", 30, 3))
    row = _row(live, task_id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert keys.account_credits(live, principal.account_id) == 10


def test_outages_are_told_from_bad_tasks(down: Context) -> None:
    """What a refused connection really raises through each storage call the
    worker makes, and what is not an outage."""
    from upscayl_cloud.storage.base import ObjectMissingError

    source = down.settings.data_dir / "x.png"
    source.write_bytes(b"x")
    for call in (
        lambda: down.storage.put_file("results/a/b/1/0.png", source),
        lambda: down.storage.download_to("a/b.png", down.settings.data_dir / "y"),
        lambda: down.storage.delete_prefix("results/a"),
    ):
        with pytest.raises(Exception) as caught:
            call()
        assert unavailable(caught.value), repr(caught.value)
    assert not unavailable(ObjectMissingError("a/b.png"))
    assert not unavailable(ValueError("bad image"))


@pytest.mark.parametrize(
    ("code", "status", "outage"),
    [
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("InvalidAccessKeyId", 403, False),
        ("EntityTooLarge", 400, False),
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
    ],
)
def test_a_store_that_answers_no_is_not_an_outage(code: str, status: int, outage: bool) -> None:
    """The store's own answers, as botocore raises them (and as boto3's
    upload wraps them): a refusal fails the task at once instead of spending
    its attempts and minutes; only "cannot serve now" is retried."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    answer = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )
    assert unavailable(answer) is outage
    try:
        try:
            raise answer
        except ClientError as exc:
            raise S3UploadFailedError(f"Failed to upload: {exc}") from exc
    except S3UploadFailedError as wrapped:
        assert unavailable(wrapped) is outage


# -- a full work disk ---------------------------------------------------------


def _tile_writes_to_dev_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in, named so, for a full disk we cannot provoke: the network
    pass's tile writes go to /dev/full, whose ENOSPC is the kernel's own."""

    def pwrite_to_dev_full(_fd: int, data: Any, offset: int) -> None:
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.pwrite(full, memoryview(data).cast("B"), offset)
        finally:
            os.close(full)

    monkeypatch.setattr(planes, "_pwrite_all", pwrite_to_dev_full)


def _encoder_writes_to_dev_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in, named so, for a full disk we cannot provoke: libvips
    encodes the output into /dev/full, raises its own error for it, and the
    engine reports that as the OSError it stands for."""

    @contextlib.contextmanager
    def into_dev_full(_destination: Path) -> Iterator[Path]:
        yield Path("/dev/full")
        raise AssertionError("/dev/full took a whole image")

    monkeypatch.setattr(planeio, "atomic_destination", into_dev_full)


def _claim_when_due(ctx: Context, deadline_s: float = 30) -> Claim:
    deadline = time.monotonic() + deadline_s
    while (held := claim(ctx.db, "w", 30, 3)) is None:
        assert time.monotonic() < deadline, "the task never became due again"
        time.sleep(0.05)
    return held


def test_too_little_free_work_space_requeues_then_completes(
    live: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    disk_with_little_free(monkeypatch)
    first = claim(live.db, "w", LEASE, 3)
    before = now_ms()
    handle(live, first)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.error) == ("pending", 1, None)
    assert row.lease_until >= before + LEASE * 1000  # after a backoff, as outages
    assert keys.account_credits(live, principal.account_id) == 9  # still reserved
    with live.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert (item.status, item.error) == ("pending", None)

    monkeypatch.undo()  # the other work ended: its space is free again
    second = _claim_when_due(live)
    assert second.attempt == 2
    handle(live, second)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", 2, 1)
    assert keys.account_credits(live, principal.account_id) == 9


@pytest.mark.parametrize("stand_in", [_tile_writes_to_dev_full, _encoder_writes_to_dev_full])
def test_a_full_disk_met_mid_engine_requeues_not_fails(
    live: Context, monkeypatch: pytest.MonkeyPatch, stand_in: Callable[..., None]
) -> None:
    """ENOSPC during the network pass or the encode (libvips's error, which
    the engine reports as ENOSPC) is the disk's state, not the file's fault."""
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    stand_in(monkeypatch)
    handle(live, claim(live.db, "w", LEASE, 3))
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.error) == ("pending", 1, None)
    with live.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert (item.status, item.error) == ("pending", None)
    assert keys.account_credits(live, principal.account_id) == 9

    monkeypatch.undo()
    handle(live, _claim_when_due(live))
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", 2, 1)


def test_a_work_disk_full_through_the_last_attempt_fails_and_says_so(
    live: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    disk_with_little_free(monkeypatch)
    for attempt in (1, 2, 3):
        held = _claim_when_due(live)
        assert held.attempt == attempt
        handle(live, held)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("failed", 3, 0)
    assert "work disk was full on all 3 attempts" in row.error
    assert "unavailable" not in row.error
    assert keys.account_credits(live, principal.account_id) == 10  # refunded
    assert claim(live.db, "w", 30, 3) is None


@pytest.fixture
def other_task_holding_the_disk(
    live: Context, monkeypatch: pytest.MonkeyPatch
) -> Iterator[contextlib.ExitStack]:
    """Another task of this process, its work folder holding 300 MB, on a
    work disk (the stand-in ``small_disk``) with room for one of the two.
    Closing the stack ends that task."""
    data = live.settings.data_dir
    small_disk(monkeypatch, data, capacity=allocated_bytes(data) + 320 * 10**6)
    with contextlib.ExitStack() as other:
        folder = other.enter_context(WORK_SPACE.folder(process_work_dir(data)))
        fill(folder / "plane", 300 * 10**6)
        yield other


def _wait_until_waiting(caplog: pytest.LogCaptureFixture, worker: threading.Thread) -> None:
    deadline = time.monotonic() + 30
    while not any("waiting for work space" in r.getMessage() for r in caplog.records):
        assert worker.is_alive(), "the worker gave up instead of waiting"
        assert time.monotonic() < deadline, "the worker never waited for work space"
        time.sleep(0.05)


def test_a_file_waits_for_space_this_process_s_other_task_holds_without_spending_an_attempt(
    live: Context,
    other_task_holding_the_disk: contextlib.ExitStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The space frees by itself when the other task ends: the file waits
    for it, its lease renewed, instead of handing its task back (which spent
    one of three attempts, and a long task here could spend them all)."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    # A lease of 3 s, renewed every second: a busy machine's pause between
    # renewals stays well within it.
    lease = 3.0
    longer = replace(live, settings=live.settings.model_copy(update={"lease_seconds": lease}))
    worker = threading.Thread(target=handle, args=(longer, claim(live.db, "w", lease, 3)))
    worker.start()
    _wait_until_waiting(caplog, worker)
    time.sleep(lease + 1)  # past the first lease: renewed while it waits
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.lease_owner) == ("processing", 1, "w")
    assert claim(live.db, "thief", lease, 3) is None

    other_task_holding_the_disk.close()
    worker.join(60)
    assert not worker.is_alive()
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", 1, 1)


def test_a_file_waiting_for_space_is_handed_back_whole_when_the_pool_stops(
    live: Context,
    other_task_holding_the_disk: contextlib.ExitStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    stopping = threading.Event()
    held = claim(live.db, "w", LEASE, 3)
    worker = threading.Thread(target=handle, args=(live, held, None, stopping))
    worker.start()
    _wait_until_waiting(caplog, worker)
    stopping.set()
    worker.join(30)
    assert not worker.is_alive()
    row = _row(live, task_id)
    # Pending again at once, its attempt given back: the stop was ours.
    assert (row.status, row.attempts, row.lease_until, row.error) == ("pending", 0, 0, None)
    assert keys.account_credits(live, principal.account_id) == 9  # still reserved
