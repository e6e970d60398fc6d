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
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

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


def _allocated(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk now."""
    total = 0
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


class WorkSpace:
    """The work disk's free space, shared by the worker threads of a process.

    A file is started only if the space it still needs fits the disk's free
    space less what the files in progress here will still write (their
    estimates less what their folders hold already): two large files
    claimed together would otherwise both start on room for one, and one
    would meet a full disk hours later. Other processes sharing the disk
    are not seen; their files show up as used space, and a full disk met
    anyway hands the task back all the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[object, tuple[Path, int]] = {}

    @contextlib.contextmanager
    def hold(self, folder: Path, estimate: int, scale: int) -> Iterator[None]:
        """Hold ``estimate`` bytes (plus margin) of work space for a file
        whose files go under ``folder``, or raise ``WorkDiskTooSmallError``
        (the disk could never hold it) or ``WorkDiskFullError`` (not now)."""
        need = work_space_needed(estimate)
        token = object()
        with self._lock:
            usage = shutil.disk_usage(folder)
            if need > usage.total:
                raise WorkDiskTooSmallError(
                    f"This file needs about {_size(need)} of work space to upscale at "
                    f"{scale}x, more than this server's work disk holds ({_size(usage.total)}): "
                    "choose a smaller scale (or a smaller image)"
                )
            others = sum(max(0, held - _allocated(path)) for path, held in self._held.values())
            still = max(0, need - _allocated(folder))
            if still > usage.free - others:
                raise WorkDiskFullError(
                    f"the work disk is full for now: this file needs {_size(still)} more, "
                    f"{_size(usage.free)} is free and files in progress here will still "
                    f"write {_size(others)}"
                )
            self._held[token] = (folder, need)
        try:
            yield
        finally:
            with self._lock:
                del self._held[token]


#: This process's work space (its worker threads share one work folder).
WORK_SPACE = WorkSpace()
