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
from support.images import png_bytes
from support.tasks import queued_task, uploaded
from upscayl_cloud.db.engine import make_engine, now_ms
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.diskspace import WORK_SPACE, allocated_bytes
from upscayl_cloud.engine import pipeline, planeio, planes
from upscayl_cloud.queue.lease import Claim, claim
from upscayl_cloud.queue.outage import RenewalOutage
from upscayl_cloud.services import keys
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.tasks import TaskOptions
from upscayl_cloud.storage.base import StorageUnavailableError
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client
from upscayl_cloud.workdirs import process_work_dir
from upscayl_cloud.worker import Heartbeat, handle, unavailable

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
    # Only the last attempt's reason is known: "on all 3 attempts" claimed
    # more (an earlier one may have been lost, or met a full disk).
    assert "unavailable on the task's last attempt (3 of 3)" in row.error
    assert "all 3" not in row.error
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
    # Its one file failed on the last attempt, saying why.
    with live.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert item.status == "failed"
    assert item.error.startswith("The work disk was full on the task's last attempt (3 of 3)")
    assert item.error in row.error
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


def _task_of_three_files(live: Context, principal: Principal, second: bytes) -> str:
    sources = [png_bytes(), second, png_bytes()]
    names = [uploaded(live, principal, data) for data in sources]
    options = TaskOptions(model="quick-clear-4x", scale="2", save_image_as="png")
    return task_service.start_task(live, principal, options, [{"fileName": n} for n in names])


def _second_file_finds_too_little_free(
    live: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The second file, 1000x1000, needs about 112 MB of work space; the
    work disk (the stand-in ``small_disk``) has 100 MB free, enough for the
    others (67 MB): another process holds 200 MB more."""
    task_id = _task_of_three_files(live, principal, png_bytes(1000, 1000))
    data = live.settings.data_dir
    small_disk(monkeypatch, data, capacity=allocated_bytes(data) + 300 * 10**6)
    fill(data / "another-process", 200 * 10**6)
    return task_id


def _second_file_meets_a_full_disk_mid_engine(
    live: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The second file's tile writes go to /dev/full (the stand-in
    ``_tile_writes_to_dev_full``), the others' to the disk."""
    task_id = _task_of_three_files(live, principal, png_bytes())
    real_upscale = pipeline.upscale_file
    calls: list[Path] = []

    def second_into_dev_full(source: Path, *args: Any, **kw: Any) -> Any:
        calls.append(source)
        if len(calls) != 2:
            return real_upscale(source, *args, **kw)
        with pytest.MonkeyPatch.context() as during:
            _tile_writes_to_dev_full(during)
            return real_upscale(source, *args, **kw)

    monkeypatch.setattr(pipeline, "upscale_file", second_into_dev_full)
    return task_id


@pytest.mark.parametrize(
    "stand_in", [_second_file_finds_too_little_free, _second_file_meets_a_full_disk_mid_engine]
)
def test_a_full_work_disk_on_the_last_attempt_fails_that_file_alone(
    live: Context, monkeypatch: pytest.MonkeyPatch, stand_in: Callable[..., str]
) -> None:
    """Handed back on its last attempt, the task failed whole: the file done
    already refunded and its result deleted, the one after never tried,
    though batches are partial-success. Now the file that met the full disk
    fails alone, saying why, and the others are delivered and charged."""
    principal = new_principal(live)[1]
    task_id = stand_in(live, principal, monkeypatch)
    assert keys.account_credits(live, principal.account_id) == 7  # three reserved
    last = live.settings.max_attempts
    with live.db.begin() as conn:  # the earlier attempts are spent
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(attempts=last - 1))
    held = claim(live.db, "w", 30, last)
    assert held is not None and held.attempt == last
    handle(live, held)
    row = _row(live, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("completed", last, 2)
    assert keys.account_credits(live, principal.account_id) == 8  # one refunded
    with live.db.begin() as conn:
        items = conn.execute(
            select(task_files)
            .where(task_files.c.task_id == task_id)
            .order_by(task_files.c.position)
        ).all()
    assert [item.status for item in items] == ["completed", "failed", "completed"]
    assert items[1].error.startswith(
        f"The work disk was full on the task's last attempt ({last} of {last})"
    )
    assert row.error == f"1 of 3 files failed: 'a.png': {items[1].error}"
    for done in (items[0], items[2]):
        assert live.storage.size(done.result_key) == done.final_file_size


class _StoresIntoDevFull:
    """The live store, except that storing a file meets a full disk: a
    stand-in, named so, for a local store on a full disk (we cannot fill
    one): its write goes to /dev/full, whose ENOSPC is the kernel's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put_file(self, key: str, path: Path) -> int:
        with open("/dev/full", "wb", buffering=0) as full:
            full.write(path.read_bytes())
        raise AssertionError("/dev/full took a whole file")


def test_a_full_disk_storing_on_the_last_attempt_fails_the_task_saying_only_that(
    live: Context,
) -> None:
    """Storing is the store's business, not the file's: the task is failed
    whole, as for a store outage, and its message no longer claims that
    every attempt met the same (only the last one's reason is known)."""
    principal = new_principal(live)[1]
    task_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    last = live.settings.max_attempts
    with live.db.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(attempts=last - 1))
    held = claim(live.db, "w", 30, last)
    assert held is not None
    handle(replace(live, storage=_StoresIntoDevFull(live.storage)), held)
    row = _row(live, task_id)
    assert (row.status, row.credits_charged) == ("failed", 0)
    assert row.error == (
        f"A disk was full on the task's last attempt ({last} of {last}); "
        "giving up (credits refunded)"
    )
    assert keys.account_credits(live, principal.account_id) == 10


def test_a_file_waiting_for_a_stalled_task_s_space_is_handed_back(
    live: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stand-in, named so, for a GPU driver hung inside a tile (which we
    cannot provoke): task A's engine call fills 300 MB of its work folder,
    then neither progresses nor asks to stop; task B, of the same process,
    waits for that space, which would free when A ends. A's heartbeat gives
    A up after UPSCAYL_TASK_STALL_SECONDS, but its thread never leaves its
    folder: B waited for good, its lease renewed by its very waiting, its
    credits held, and files claimed later queued behind it. Once A is given
    up on, B is handed back as for space held by anything else."""
    caplog.set_level(logging.INFO)
    lease, stall = 3.0, 5.0
    short = replace(
        live,
        settings=live.settings.model_copy(
            update={"lease_seconds": lease, "task_stall_seconds": stall}
        ),
    )
    principal = new_principal(live)[1]
    wedged_id = queued_task(live, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    waiting_id = queued_task(
        live, principal, model="quick-clear-4x", scale="2", save_image_as="png"
    )
    data = live.settings.data_dir
    small_disk(monkeypatch, data, capacity=allocated_bytes(data) + 320 * 10**6)
    real_upscale = pipeline.upscale_file
    planes_in, b_waits, unwedge = threading.Event(), threading.Event(), threading.Event()

    def wedges_first(*args: Any, settings: Any, should_cancel: Any, **kw: Any) -> Any:
        if planes_in.is_set():
            return real_upscale(*args, settings=settings, should_cancel=should_cancel, **kw)
        fill(settings.work_dir / "plane", 300 * 10**6)
        planes_in.set()
        # Alive until B waits (its stall clock would otherwise run out
        # before B, on a slow machine, got as far as waiting), then wedged:
        # no progress, no check for cancellation.
        while not b_waits.wait(0.2):
            should_cancel()
        unwedge.wait(60)
        raise RuntimeError("stand-in: the wedged call returned")

    monkeypatch.setattr(pipeline, "upscale_file", wedges_first)
    first = claim(live.db, "a", lease, 3)
    assert first is not None and first.task_id == wedged_id
    wedged = threading.Thread(target=handle, args=(short, first), daemon=True)
    wedged.start()
    try:
        assert planes_in.wait(60), "the wedged task never reached the engine"
        second = claim(live.db, "b", lease, 3)
        assert second is not None and second.task_id == waiting_id
        waiting = threading.Thread(target=handle, args=(short, second), daemon=True)
        waiting.start()
        _wait_until_waiting(caplog, waiting)
        b_waits.set()
        waiting.join(30)
        assert not waiting.is_alive(), "it waited for good for a stalled task's space"
        assert "no sign of life" in caplog.text
        assert "stalled tasks here hold 300 MB" in caplog.text
        row = _row(live, waiting_id)
        # Back to the queue after a backoff, as for a disk full of anything else.
        assert (row.status, row.attempts, row.error) == ("pending", 1, None)
        assert keys.account_credits(live, principal.account_id) == 8  # both still reserved
        assert wedged.is_alive()  # stuck until the process restarts
    finally:
        unwedge.set()
        wedged.join(60)
    assert not wedged.is_alive()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_heartbeat_s_failed_renewals_are_told_once_reminded_each_minute_and_ended_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A heartbeat logged each failed renewal: a line a second per busy
    thread through a database outage."""
    caplog.set_level(logging.INFO)
    clock = _Clock()
    outage = RenewalOutage("t1", clock)
    outage.recovered()  # no outage: nothing to say
    refused = ConnectionRefusedError("connection refused\nDETAIL: more lines")
    for second in range(130):
        clock.now = 1000.0 + second
        outage.failed(refused)
    outage.recovered()
    outage.recovered()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            "WARNING",
            "lease renewal failed for task t1 (connection refused); retrying every beat, "
            "with a reminder a minute",
        ),
        (
            "WARNING",
            "lease renewals for task t1 still failing after 60 s (61 failed): connection refused",
        ),
        (
            "WARNING",
            "lease renewals for task t1 still failing after 120 s (121 failed): connection refused",
        ),
        ("INFO", "lease renewal for task t1 succeeded again after 129 s (130 failed)"),
    ]


def test_a_heartbeat_facing_a_refused_database_logs_one_line_not_one_a_beat(
    live: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """The outage is real: a PostgreSQL URL on a loopback port nobody
    listens on. With a lease of 0.5 s the heartbeat beats every 0.17 s: 1.5 s
    of it logged about nine lines."""
    dead = make_engine(f"postgresql+psycopg://u:p@127.0.0.1:{_closed_port()}/none")
    caplog.set_level(logging.INFO)
    try:
        with Heartbeat(replace(live, db=dead), Claim("t1", 1)) as beat:
            time.sleep(1.5)
            assert not beat.lost  # an outage is not a lost lease
    finally:
        dead.dispose()
    lines = [r.getMessage() for r in caplog.records if "lease renewal" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lease renewal failed for task t1 (")
