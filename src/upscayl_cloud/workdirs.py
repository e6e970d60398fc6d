"""Work folders: one per process, and what dead processes left behind.

A worker's sources and the engine's planes can be GBs, and a process killed
outright (SIGKILL, OOM, power loss) cannot clean up after itself. Each
process works in ``<data>/work/<host>-<pid>-<random>`` and holds a lock on
``<host>-<pid>-<random>.lock`` beside it for as long as it runs; the kernel
drops the lock when the process dies, so a starting pool can tell a dead
process's folder from a live one's, even with several processes sharing the
data directory. The random part is drawn once per process start: two live
processes never share a name, even with the same host name and pid (two
containers on the host network sharing a data directory, both PID 1).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

#: Work folders without a lock (left by versions before the per-process
#: folders) are removed once untouched this long: no task runs for a day.
STALE_WORK_SECONDS = 24 * 3600

#: Lock files are opened for writing (on NFS, flock is emulated with a write
#: lock) and never through a symlink: a planted ``x.lock`` link is not ours.
_LOCK_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC

_work_guard = threading.Lock()
#: The pid that ``_name`` and ``_work_locks`` belong to: a forked child
#: draws its own name and takes its own locks.
_owner_pid = 0
_name = ""
#: Work root -> (folder name, descriptor of its held lock file).
_work_locks: dict[Path, tuple[str, int]] = {}
#: Work root -> how many worker pools of this process work under it now.
_holders: dict[Path, int] = {}


def _fresh_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _own_state() -> None:
    """Draw this process's name once (again in a forked child); call under
    ``_work_guard``."""
    global _owner_pid, _name
    if _owner_pid != os.getpid():
        _owner_pid = os.getpid()
        _name = _fresh_name()
        _work_locks.clear()  # the parent's: its locks, not this process's
        _holders.clear()


def _lock(work: Path) -> tuple[str, int]:
    """Create and lock this process's lock file under ``work``; a name that is
    taken (held, or a symlink planted there) is given up for a fresh one."""
    global _name
    for _ in range(5):
        try:
            fd = os.open(work / f"{_name}.lock", _LOCK_FLAGS, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            _name = _fresh_name()
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _name = _fresh_name()
            continue
        except BaseException:
            os.close(fd)
            raise
        return _name, fd
    raise RuntimeError(f"no free work folder name under {work}")


def process_work_dir(data_dir: Path) -> Path:
    """This process's folder for work files, ``<data>/work/<host>-<pid>-<random>``.

    The first call takes an exclusive lock on the ``.lock`` file beside it and
    keeps it for the life of the process: the kernel drops it when the process
    dies, even by SIGKILL, which is how ``sweep_work_dirs`` tells a dead
    process's folder from a live one's (several processes may share the data
    directory)."""
    work = (data_dir / "work").resolve()
    with _work_guard:
        _own_state()
        if work not in _work_locks:
            work.mkdir(parents=True, exist_ok=True)
            _work_locks[work] = _lock(work)
        folder = work / _work_locks[work][0]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def hold_work_dir(data_dir: Path) -> None:
    """A worker pool of this process starts working under ``data_dir``."""
    work = (data_dir / "work").resolve()
    with _work_guard:
        _own_state()
        _holders[work] = _holders.get(work, 0) + 1


def let_go_work_dir(data_dir: Path) -> bool:
    """A worker pool stopped with no task left running: once no pool of this
    process works under ``data_dir`` any more, this process's folder and its
    lock file are removed, so a clean stop leaves nothing behind (the next
    start would sweep them, but a host that never starts again kept them).
    True when removed."""
    work = (data_dir / "work").resolve()
    with _work_guard:
        _own_state()
        left = _holders.get(work, 0) - 1
        if left > 0:
            _holders[work] = left
            return False
        _holders.pop(work, None)
        held = _work_locks.pop(work, None)
    if held is None:
        return False  # no task ever made the folder
    name, fd = held
    try:
        # The folder first, the lock file last and while still held (see
        # _remove_if_dead): a sweep never takes a half-removed folder for ours.
        shutil.rmtree(work / name, ignore_errors=True)
        (work / f"{name}.lock").unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


def _remove_if_dead(work: Path, lock_path: Path) -> bool:
    """Remove the folder of ``lock_path`` and then the lock file, if its
    process is gone; True when removed."""
    try:
        # Not created here: one another sweep just removed stays removed.
        fd = os.open(lock_path, _LOCK_FLAGS & ~os.O_CREAT)
    except OSError:
        return False  # gone, unreadable, or a symlink (ELOOP): not ours
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its process is alive
        try:
            held, current = os.fstat(fd), os.lstat(lock_path)
        except OSError:
            return False  # another pool's sweep removed it meanwhile
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            return False
        # The folder first, the lock file last and while still held: whoever
        # sees the lock file free may take the folder to be a dead process's.
        shutil.rmtree(work / lock_path.stem, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def sweep_work_dirs(data_dir: Path) -> int:
    """Remove work folders whose process is gone; returns how many.

    A folder with a lock file is removed when its lock can be taken (its
    process died: a SIGKILLed worker's sources and engine planes can be GBs).
    A folder without one (an older version's ``tmpXXXX``, ``upscayl-XXXX``)
    is removed once untouched for ``STALE_WORK_SECONDS``. This process's own
    name is never touched, and neither is a symlinked lock file."""
    work = (data_dir / "work").resolve()
    if not work.is_dir():
        return 0
    with _work_guard:
        _own_state()
        own = {_name} | {name for name, _ in _work_locks.values()}
    removed = 0
    for lock_path in work.glob("*.lock"):
        if lock_path.stem in own:
            continue
        if _remove_if_dead(work, lock_path):
            removed += 1
    locked = {path.stem for path in work.glob("*.lock")} | own
    cutoff = time.time() - STALE_WORK_SECONDS
    for entry in work.iterdir():
        if entry.name in locked or entry.suffix == ".lock":
            continue
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d work folder(s) left by stopped processes", removed)
    return removed
