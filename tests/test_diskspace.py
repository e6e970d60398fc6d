"""Telling a full disk from other failures, and the work space files hold."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.disk import fill, small_disk
from upscayl_cloud.diskspace import (
    WaitCancelledError,
    WorkDiskFullError,
    WorkDiskTooSmallError,
    WorkSpace,
    out_of_space,
    work_space_needed,
)


def test_full_disks_are_told_from_other_failures(tmp_path: Path) -> None:
    """What a full disk really raises: the kernel's ENOSPC, libvips's error
    for a failed write, and the decoder's EIO wrapped around it."""
    import pyvips

    full = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as kernel:
            os.write(full, b"x" * 4096)
    finally:
        os.close(full)
    assert out_of_space(kernel.value)
    with pytest.raises(pyvips.Error) as libvips:
        pyvips.Image.black(64, 64).pngsave("/dev/full")
    assert out_of_space(libvips.value)
    try:
        try:
            raise libvips.value
        except pyvips.Error as err:
            raise OSError(errno.EIO, "could not write a decoded plane") from err
    except OSError as wrapped:
        assert out_of_space(wrapped)
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))

    assert not out_of_space(OSError(errno.EIO, "I/O error"))
    assert not out_of_space(ValueError("No space left on device"))  # words alone, not libvips
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(pyvips.Error) as corrupt:
        pyvips.Image.new_from_file(str(tmp_path / "bad.png")).avg()
    assert not out_of_space(corrupt.value)


MB = 10**6
#: A test's work space checks look again this often (the service's: 1 s).
POLL_S = 0.02
#: Long enough for a file that should wait to have started if it were not.
SETTLE_S = 0.3


def _until_waiting(caplog: pytest.LogCaptureFixture, files: int) -> None:
    """Until ``files`` files have said they wait for work space (a file that
    has not reached the line yet would pass "not started" checks anyway)."""
    deadline = time.monotonic() + 30
    while sum("waiting for work space" in r.getMessage() for r in caplog.records) < files:
        assert time.monotonic() < deadline, f"fewer than {files} files waited for work space"
        time.sleep(0.01)


class _FileInThread:
    """A worker thread's file: holds its work space until told to finish."""

    def __init__(
        self,
        space: WorkSpace,
        folder: Path,
        estimate: int,
        started_order: list[str] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._finish = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(space, folder, estimate, started_order, should_stop),
            daemon=True,
        )
        self._thread.start()

    def _run(
        self,
        space: WorkSpace,
        folder: Path,
        estimate: int,
        started_order: list[str] | None,
        should_stop: Callable[[], bool],
    ) -> None:
        try:
            with space.hold(folder, estimate, 2, should_stop):
                if started_order is not None:
                    started_order.append(folder.name)
                self.started.set()
                self._finish.wait(30)
        except BaseException as exc:  # read by the test
            self.error = exc

    def finish(self) -> None:
        self._finish.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_files_in_progress_keep_the_space_they_will_still_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two worker threads of one process: the second file starts only if the
    free space covers what the first will still write, not just its own; it
    waits meanwhile, and starts once the first task's folder is gone."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=2 * need - MB)
    space = WorkSpace(POLL_S)
    with contextlib.ExitStack() as first_task, space.folder(tmp_path) as second_folder:
        first_folder = first_task.enter_context(space.folder(tmp_path))
        first = _FileInThread(space, first_folder, estimate)
        assert first.started.wait(10)
        second = _FileInThread(space, second_folder, estimate)
        _until_waiting(caplog, 1)
        assert not second.started.is_set()  # the disk is free, but owed
        # What the first has written is no longer owed, and no longer free.
        fill(first_folder / "plane", need - MB // 2)
        time.sleep(SETTLE_S)
        assert not second.started.is_set()
        first.finish()
        # The first's file is done, but its task's folder and the plane in it
        # stay until the task ends.
        time.sleep(SETTLE_S)
        assert not second.started.is_set()
        first_task.close()
        assert second.started.wait(10)
        assert second.error is None
        second.finish()


def test_a_file_waits_for_this_process_s_other_tasks_then_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that fits once the other tasks here end waits for them, without
    an error: handing its task back would spend one of its attempts on space
    that frees by itself."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=need + 20 * MB)
    space = WorkSpace(POLL_S)
    with space.folder(tmp_path) as waiting_folder:
        with space.folder(tmp_path) as running_folder:
            fill(running_folder / "result", 30 * MB)  # stored, not yet uploaded
            waiting = _FileInThread(space, waiting_folder, estimate)
            _until_waiting(caplog, 1)
            time.sleep(SETTLE_S)  # it keeps waiting
            assert not waiting.started.is_set()
            assert waiting.error is None
        assert waiting.started.wait(10)
        assert waiting.error is None
        waiting.finish()


def test_space_held_by_anything_else_hands_the_task_back_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Space held by other processes (used space this one knows nothing of)
    may never free: no waiting for it, even while tasks here run."""
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=need + 20 * MB)
    fill(tmp_path / "another-process", 25 * MB)
    space = WorkSpace(POLL_S)
    with (
        pytest.raises(WorkDiskFullError) as alone,
        space.folder(tmp_path) as folder,
        space.hold(folder, estimate, 2),
    ):
        pass
    assert out_of_space(alone.value)
    assert "full for now" in str(alone.value)
    with space.folder(tmp_path) as running_folder, space.folder(tmp_path) as folder:
        fill(running_folder / "plane", 2 * MB)  # frees too little when it ends
        began = time.monotonic()
        with pytest.raises(WorkDiskFullError), space.hold(folder, estimate, 2):
            pass
        # No waiting: it would wait for good (nothing here frees enough).
        assert time.monotonic() - began < 5


def test_a_file_the_whole_disk_cannot_hold_is_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_disk(monkeypatch, tmp_path, capacity=100 * MB)
    space = WorkSpace(POLL_S)
    with (
        pytest.raises(WorkDiskTooSmallError) as caught,
        space.folder(tmp_path) as folder,
        space.hold(folder, 500 * MB, 8),
    ):
        pass
    assert "at 8x" in str(caught.value)
    assert "choose a smaller scale" in str(caught.value)


def test_a_waiting_file_stops_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost lease or a stopping pool ends the wait at the next look."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=need + 20 * MB)
    space = WorkSpace(POLL_S)
    stop = threading.Event()
    with space.folder(tmp_path) as running_folder, space.folder(tmp_path) as folder:
        fill(running_folder / "plane", 30 * MB)
        waiting = _FileInThread(space, folder, estimate, should_stop=stop.is_set)
        _until_waiting(caplog, 1)
        assert waiting.error is None
        stop.set()
        waiting.finish()
        assert isinstance(waiting.error, WaitCancelledError)
        assert not waiting.started.is_set()


def test_files_get_their_space_first_come_first_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A small file that would fit now does not pass a large one waiting
    ahead of it: a stream of small files would otherwise starve it."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    large, small = 100 * MB, 0
    capacity = work_space_needed(10 * MB) + work_space_needed(large) - MB
    small_disk(monkeypatch, tmp_path, capacity=capacity)
    space = WorkSpace(POLL_S)
    order: list[str] = []
    with space.folder(tmp_path) as large_folder, space.folder(tmp_path) as small_folder:
        with space.folder(tmp_path) as running_folder:
            running = _FileInThread(space, running_folder, 10 * MB, order)
            assert running.started.wait(10)
            waiting_large = _FileInThread(space, large_folder, large, order)
            _until_waiting(caplog, 1)
            waiting_small = _FileInThread(space, small_folder, small, order)
            _until_waiting(caplog, 2)
            assert order == [running_folder.name]  # the small one fits, but waits
            running.finish()
        assert waiting_large.started.wait(10)
        assert waiting_small.started.wait(10)
        assert order == [running_folder.name, large_folder.name, small_folder.name]
        waiting_large.finish()
        waiting_small.finish()


def test_space_a_stalled_task_holds_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A task given up on (its heartbeat saw no sign of life: a call wedged
    in native code) may never remove its folder. Counted as space that
    frees, it kept a file waiting for good, that file's lease renewed by its
    very waiting; given up on, it is space held by something else, and the
    file is handed back at its next look."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=need + 20 * MB)
    space = WorkSpace(POLL_S)
    stalled = threading.Event()
    with (
        space.folder(tmp_path, stalled.is_set) as stuck_folder,
        space.folder(tmp_path) as folder,
    ):
        fill(stuck_folder / "plane", 30 * MB)
        waiting = _FileInThread(space, folder, estimate)
        _until_waiting(caplog, 1)
        time.sleep(SETTLE_S)
        assert waiting.error is None  # it waits while that task lives
        stalled.set()
        waiting.finish()  # raised: not waiting any more
        assert isinstance(waiting.error, WorkDiskFullError)
        assert "stalled tasks here hold 30 MB" in str(waiting.error)
        assert not waiting.started.is_set()


def test_what_a_stalled_task_would_still_write_is_not_kept_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A task given up on writes no more (should its call return, it stops
    at its next check): the space its file held but had not written yet
    goes to the file waiting for it."""
    caplog.set_level(logging.INFO, logger="upscayl_cloud.diskspace")
    estimate = 10 * MB
    need = work_space_needed(estimate)
    small_disk(monkeypatch, tmp_path, capacity=2 * need - MB)
    space = WorkSpace(POLL_S)
    stalled = threading.Event()
    with (
        space.folder(tmp_path, stalled.is_set) as stuck_folder,
        space.folder(tmp_path) as folder,
    ):
        stuck = _FileInThread(space, stuck_folder, estimate)
        assert stuck.started.wait(10)
        waiting = _FileInThread(space, folder, estimate)
        _until_waiting(caplog, 1)
        time.sleep(SETTLE_S)
        assert not waiting.started.is_set()  # owed to the task while it lives
        stalled.set()
        assert waiting.started.wait(10)
        assert waiting.error is None
        waiting.finish()
        stuck.finish()
