"""Work files of a SIGKILLed worker process are removed when a pool starts on
the same data directory; a live process's are not. Real child processes,
really killed: the lock they held is dropped by the kernel, as in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from upscayl_cloud.services.context import Context
from upscayl_cloud.workdirs import STALE_WORK_SECONDS
from upscayl_cloud.worker import WorkerPool

CHILD = """
import sys, time
from pathlib import Path
from upscayl_cloud.workdirs import process_work_dir
folder = process_work_dir(Path(sys.argv[1]))
(folder / "tmpabc").mkdir()
(folder / "tmpabc" / "0-source").write_bytes(b"x" * 4096)
print(folder, flush=True)
time.sleep(600)
"""


def _worker_process(data_dir: Path) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_pool_start_removes_dead_processes_work_and_spares_live_ones(ctx: Context) -> None:
    data_dir = ctx.settings.data_dir
    dead, dead_folder = _worker_process(data_dir)
    live, live_folder = _worker_process(data_dir)
    try:
        assert dead_folder.name.endswith(f"-{dead.pid}") and dead_folder.is_dir()
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(timeout=10)
        work = data_dir / "work"
        old, recent = work / "tmpold", work / "upscayl-recent"  # an older version's
        for folder in (old, recent):
            folder.mkdir()
            (folder / "color-0.raw").write_bytes(b"x")
        stale = time.time() - STALE_WORK_SECONDS - 60
        os.utime(old, (stale, stale))

        pool = WorkerPool(ctx, 0)
        pool.start()
        pool.stop()

        assert not dead_folder.exists()
        assert not dead_folder.with_name(dead_folder.name + ".lock").exists()
        assert (live_folder / "tmpabc" / "0-source").is_file()
        assert not old.exists() and recent.is_dir()
    finally:
        for child in (dead, live):
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


def test_tasks_work_in_this_process_folder(ctx: Context) -> None:
    from upscayl_cloud.worker import engine_settings

    work_dir = engine_settings(ctx.settings).work_dir
    assert work_dir is not None
    assert work_dir.parent == (ctx.settings.data_dir / "work").resolve()
    assert work_dir.name.endswith(f"-{os.getpid()}")
