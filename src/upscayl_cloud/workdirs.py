"""Work folders: one per process, and what dead processes left behind.

A worker's sources and the engine's planes can be GBs, and a process killed
outright (SIGKILL, OOM, power loss) cannot clean up after itself. Each
process works in ``<data>/work/<host>-<pid>`` and holds a lock on
``<host>-<pid>.lock`` beside it for as long as it runs; the kernel drops the
lock when the process dies, so a starting pool can tell a dead process's
folder from a live one's, even with several processes sharing the data
directory and pids reused (a container restarted as PID 1).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

#: Work folders without a lock (left by versions before the per-process
#: folders) are removed once untouched this long: no task runs for a day.
STALE_WORK_SECONDS = 24 * 3600

_work_locks: dict[Path, IO[str]] = {}
_work_guard = threading.Lock()


def process_work_dir(data_dir: Path) -> Path:
    """This process's folder for work files, ``<data>/work/<host>-<pid>``.

    The first call takes an exclusive lock on ``<host>-<pid>.lock`` beside it
    and keeps it for the life of the process: the kernel drops it when the
    process dies, even by SIGKILL, which is how ``sweep_work_dirs`` tells a
    dead process's folder from a live one's (several processes may share the
    data directory). Whatever is in the folder then is a predecessor's with
    the same name (a container restarted as PID 1): removed."""
    work = (data_dir / "work").resolve()
    name = f"{socket.gethostname()}-{os.getpid()}"
    folder = work / name
    with _work_guard:
        if work not in _work_locks:
            work.mkdir(parents=True, exist_ok=True)
            handle = (work / f"{name}.lock").open("a")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
            _work_locks[work] = handle
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sweep_work_dirs(data_dir: Path) -> int:
    """Remove work folders whose process is gone; returns how many.

    A folder with a lock file is removed when its lock can be taken (its
    process died: a SIGKILLed worker's sources and engine planes can be GBs).
    A folder without one (an older version's ``tmpXXXX``, ``upscayl-XXXX``)
    is removed once untouched for ``STALE_WORK_SECONDS``."""
    work = (data_dir / "work").resolve()
    if not work.is_dir():
        return 0
    removed = 0
    for lock_path in work.glob("*.lock"):
        if work in _work_locks and lock_path.name == Path(_work_locks[work].name).name:
            continue
        try:
            handle = lock_path.open("a")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: its process is alive
            shutil.rmtree(work / lock_path.stem, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            removed += 1
    locked = {path.stem for path in work.glob("*.lock")}
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
