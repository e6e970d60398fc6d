"""Disk space: a full disk told apart from every other failure, for the API
and the workers alike (neither imports the other: this module imports
nothing of the project, and loads no image library), and the work space a
worker's files hold while they run.

A full disk (or quota) is no bug of ours nor the client's, and it passes:
the API answers 503 (``api.errors``), a worker hands its task back to the
queue with a backoff (``worker``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: ``ENOSPC`` (no space left on the device) and ``EDQUOT`` (quota exceeded).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How libvips reports them: its errors carry the system's words, not the
#: number ("system error: No space left on device").
_NO_SPACE_WORDS = tuple(os.strerror(code).lower() for code in sorted(NO_SPACE_ERRNOS))


def _from_libvips(error: BaseException) -> bool:
    """A ``pyvips.Error``, told by its module so that pyvips is not imported."""
    return type(error).__module__.split(".")[0] == "pyvips"


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a full disk: an
    ``OSError`` with ``ENOSPC``/``EDQUOT``, or a libvips error whose text
    says so (a failed plane or file write)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        if _from_libvips(current) and any(w in str(current).lower() for w in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


class WorkDiskFullError(OSError):
    """The work disk lacks the free space a file needs *now*: other work
    holds it, and it frees when that ends. An ``ENOSPC`` like the kernel's,
    so the task is handed back as a full disk met mid-write is."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class WorkDiskTooSmallError(Exception):
    """The whole work disk could never hold what a file needs: the file
    fails at once, its message saying how much it needs."""


#: Work space asked for beyond the engine's estimate: the thumbnail, the
#: file system's own blocks, and a share for what the estimate leaves out.
WORK_SPACE_MARGIN_BYTES = 64 * 2**20
WORK_SPACE_MARGIN_RATIO = 0.05


def work_space_needed(estimate: int) -> int:
    """The estimate (``pipeline.work_space_bytes``) plus the margin."""
    return int(estimate * (1 + WORK_SPACE_MARGIN_RATIO)) + WORK_SPACE_MARGIN_BYTES


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{max(1, round(count / 1e6))} MB"


def allocated_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk now."""
    total = 0
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


class WaitCancelledError(Exception):
    """A file waiting for work space was asked to stop (its lease was lost or
    the pool is stopping) before the space came free."""


def _never() -> bool:
    return False


@dataclass
class _Folder:
    """A task's work folder: the space its file in progress holds (0 when
    none), whether that file is waiting in line for space, and whether its
    task was given up on (``given_up``: stalled, its thread maybe stuck for
    good)."""

    held: int = 0
    waiting: bool = False
    given_up: Callable[[], bool] = _never


class WorkSpace:
    """The work disk's free space, shared by the worker threads of a process.

    A file is started only if the space it still needs fits the disk's free
    space less what the files in progress here will still write (their
    estimates less what their folders hold already): two large files
    claimed together would otherwise both start on room for one, and one
    would meet a full disk hours later.

    A file that does not fit *now*, but would once this process's other
    tasks end (their folders removed, their writes not made), waits for
    them, first come first served, its lease renewed meanwhile: handing it
    back would spend one of its attempts on work that frees by itself, and
    a long file here could spend them all. Space held by anything else
    (other processes sharing the disk show up as used space) may never
    free, so a file that would not fit even then is handed back at once,
    and a full disk met anyway is handed back all the same.

    Only a task that shows signs of life frees its space by itself: one
    given up on (its heartbeat saw no sign of life: a call wedged in native
    code) may hold its folder until the process restarts, so its folder
    counts as space held by something else (``folder``'s ``given_up``).
    Counted as freeing, it kept a file waiting for it for good, that file's
    lease renewed by its very waiting, its credits held. A waiting file
    looks again within ``poll_seconds`` of the stall: it starts if it fits
    without that space, and is handed back if not."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self._changed = threading.Condition()
        self._folders: dict[Path, _Folder] = {}
        self._line: deque[Path] = deque()
        #: How often a waiting file looks again at the disk and at whether it
        #: should stop, beyond the wake-ups of this process's own changes.
        self._poll_seconds = poll_seconds

    @contextlib.contextmanager
    def folder(self, parent: Path, given_up: Callable[[], bool] = _never) -> Iterator[Path]:
        """A new work folder under ``parent`` for one task's files, known to
        the files that wait for space until it is removed: its bytes are
        counted as freeing only while its task runs, and not once
        ``given_up`` says its task was given up on; a waiting file is woken
        once they are gone, not before."""
        path = Path(tempfile.mkdtemp(dir=parent))
        with self._changed:
            self._folders[path] = _Folder(given_up=given_up)
        try:
            yield path
        finally:
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                with self._changed:
                    del self._folders[path]
                    self._changed.notify_all()

    @contextlib.contextmanager
    def hold(
        self,
        folder: Path,
        estimate: int,
        scale: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[None]:
        """Hold ``estimate`` bytes (plus margin) of work space for a file
        whose files go under ``folder`` (from :meth:`folder`), waiting for
        this process's other tasks where only they stand in the way; or
        raise ``WorkDiskTooSmallError`` (the disk could never hold it),
        ``WorkDiskFullError`` (not now, nor once this process's other tasks
        end) or ``WaitCancelledError`` (``should_stop`` said so while it
        waited)."""
        need = work_space_needed(estimate)
        with self._changed:
            mine = self._folders[folder]
            total = shutil.disk_usage(folder).total
            if need > total:
                raise WorkDiskTooSmallError(
                    f"This file needs about {_size(need)} of work space to upscale at "
                    f"{scale}x, more than this server's work disk holds ({_size(total)}): "
                    "choose a smaller scale (or a smaller image)"
                )
            self._line.append(folder)
            try:
                self._wait_for(folder, mine, need, should_stop)
            finally:
                self._line.remove(folder)
                mine.waiting = False
                self._changed.notify_all()  # the next in line may go now
            mine.held = need
        try:
            yield
        finally:
            with self._changed:
                mine.held = 0
                self._changed.notify_all()

    def _wait_for(
        self, folder: Path, mine: _Folder, need: int, should_stop: Callable[[], bool]
    ) -> None:
        """Return once the file may start; the caller holds the lock."""
        while True:
            free = shutil.disk_usage(folder).free
            others = {path: entry for path, entry in self._folders.items() if path != folder}
            written = {path: allocated_bytes(path) for path in others}
            # A task given up on writes no more (should it wake, it stops at
            # its next check) and frees nothing a file could wait for.
            stuck = {path for path, entry in others.items() if entry.given_up()}
            alive = {path: entry for path, entry in others.items() if path not in stuck}
            owed = sum(max(0, e.held - written[p]) for p, e in alive.items() if e.held)
            still = max(0, need - allocated_bytes(folder))
            first = self._line[0] == folder
            if first and still <= free - owed:
                return
            # Only tasks that run free their space by themselves: a waiting
            # one frees nothing until it has run. A file behind the first in
            # line counts every live task here, the first's included: it
            # waits for the first to start or give up before it judges for
            # itself.
            running = (p for p, e in alive.items() if not e.waiting)
            freeing = sum(written[p] for p in (running if first else alive))
            if still > free + freeing:
                stalled = sum(written[p] for p in stuck)
                raise WorkDiskFullError(
                    f"the work disk is full for now: this file needs {_size(still)} more, "
                    f"{_size(free)} is free and files in progress here will still "
                    f"write {_size(owed)}"
                    + (
                        f"; stalled tasks here hold {_size(stalled)} until their threads "
                        "return (or this process restarts)"
                        if stalled
                        else ""
                    )
                )
            if not mine.waiting:
                mine.waiting = True
                log.info(
                    "waiting for work space: %s needed, %s free, this process's other "
                    "tasks hold %s and will still write %s",
                    _size(still), _size(free), _size(freeing), _size(owed),
                )  # fmt: skip
            self._changed.wait(self._poll_seconds)
            if should_stop():
                raise WaitCancelledError("stopped while waiting for work space")


#: This process's work space (its worker threads share one work folder).
WORK_SPACE = WorkSpace()
