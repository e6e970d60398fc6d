"""Work files of a SIGKILLed worker process are removed when a pool starts on
the same data directory; a live process's are not. Real child processes,
really killed: the lock they held is dropped by the kernel, as in production."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from upscayl_cloud import worker
from upscayl_cloud.services.context import Context
from upscayl_cloud.workdirs import STALE_WORK_SECONDS, sweep_work_dirs
from upscayl_cloud.worker import WorkerPool

# FAKE_PID: the pid the child reports (two containers on the host network,
# both PID 1); FIRST_UUID: the first random value it draws.
CHILD = """
import os, sys, time, uuid
from pathlib import Path
if os.environ.get("FAKE_PID"):
    fake_pid = int(os.environ["FAKE_PID"])
    os.getpid = lambda: fake_pid
if os.environ.get("FIRST_UUID"):
    real_uuid4, drawn = uuid.uuid4, [uuid.UUID(os.environ["FIRST_UUID"])]
    uuid.uuid4 = lambda: drawn.pop() if drawn else real_uuid4()
from upscayl_cloud.workdirs import process_work_dir
folder = process_work_dir(Path(sys.argv[1]))
(folder / "tmpabc").mkdir()
(folder / "tmpabc" / "0-source").write_bytes(b"x" * 4096)
print(folder, flush=True)
time.sleep(600)
"""


def _worker_process(data_dir: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_pool_start_removes_dead_processes_work_and_spares_live_ones(ctx: Context) -> None:
    data_dir = ctx.settings.data_dir
    dead, dead_folder = _worker_process(data_dir)
    live, live_folder = _worker_process(data_dir)
    try:
        assert re.fullmatch(rf".+-{dead.pid}-[0-9a-f]{{8}}", dead_folder.name)
        assert dead_folder.is_dir()
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
        _end(dead, live)


def test_a_running_pool_sweeps_again_when_idle(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies while its neighbours keep running (and is not
    restarted) leaves its folder to them: an idle pool sweeps again after
    WORK_SWEEP_INTERVAL_S."""
    monkeypatch.setattr(worker, "WORK_SWEEP_INTERVAL_S", 0.2)
    pool = WorkerPool(ctx, 1)
    pool.start()
    dead, dead_folder = _worker_process(ctx.settings.data_dir)
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(timeout=10)
        deadline = time.monotonic() + 20
        while dead_folder.exists():
            assert time.monotonic() < deadline, "the idle pool never swept again"
            time.sleep(0.1)
    finally:
        pool.stop()
        _end(dead)


def test_tasks_work_in_this_process_folder(ctx: Context) -> None:
    from upscayl_cloud.worker import engine_settings

    work_dir = engine_settings(ctx.settings).work_dir
    assert work_dir is not None
    assert work_dir.parent == (ctx.settings.data_dir / "work").resolve()
    assert re.fullmatch(rf".+-{os.getpid()}-[0-9a-f]{{8}}", work_dir.name)
    assert engine_settings(ctx.settings).work_dir == work_dir  # drawn once


def _end(*children: subprocess.Popen[str]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_two_processes_with_the_same_host_and_pid_get_their_own_folders(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first, first_folder = _worker_process(data_dir, FAKE_PID="1")
    second, second_folder = _worker_process(data_dir, FAKE_PID="1")
    try:
        prefix = f"{socket.gethostname()}-1-"
        assert first_folder.name.startswith(prefix), first_folder
        assert second_folder.name.startswith(prefix), second_folder
        assert first_folder != second_folder
        assert first.poll() is None and second.poll() is None

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert sweep_work_dirs(data_dir) == 1
        assert not first_folder.exists()
        assert not first_folder.with_name(first_folder.name + ".lock").exists()
        assert (second_folder / "tmpabc" / "0-source").is_file()
        assert second_folder.with_name(second_folder.name + ".lock").is_file()
    finally:
        _end(first, second)


def test_a_planted_lock_symlink_is_not_followed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    work = data_dir / "work"
    work.mkdir(parents=True)
    missing, precious = tmp_path / "created-through-link", tmp_path / "precious"
    precious.write_bytes(b"keep")
    (work / "planted.lock").symlink_to(missing)
    (work / "other.lock").symlink_to(precious)
    (work / "planted").mkdir()

    sweep_work_dirs(data_dir)
    assert not missing.exists()
    assert precious.read_bytes() == b"keep"
    assert (work / "planted.lock").is_symlink() and (work / "planted").is_dir()

    # The name a process draws first is a planted link: it takes another.
    first = uuid.UUID(int=0)
    taken = f"{socket.gethostname()}-1-{first.hex[:8]}"
    (work / f"{taken}.lock").symlink_to(missing)
    child, folder = _worker_process(data_dir, FAKE_PID="1", FIRST_UUID=str(first))
    try:
        assert folder.name.startswith(f"{socket.gethostname()}-1-"), folder
        assert folder.name != taken and folder.is_dir()
        assert not missing.exists()
    finally:
        _end(child)


def test_a_clean_stop_leaves_no_work_folder(ctx: Context) -> None:
    """The last pool of a process to stop removes its folder and lock; one
    still running keeps them, and stopping a pool twice counts once."""
    from upscayl_cloud.workdirs import process_work_dir

    work = (ctx.settings.data_dir / "work").resolve()
    first, second = WorkerPool(ctx, 1), WorkerPool(ctx, 1)
    first.start()
    second.start()
    folder = process_work_dir(ctx.settings.data_dir)  # as a task makes it
    (folder / "tmpabc").mkdir()
    (folder / "tmpabc" / "0-source").write_bytes(b"x")

    first.stop()
    first.stop()
    assert (folder / "tmpabc" / "0-source").is_file(), "the other pool still works there"
    second.stop()
    assert list(work.iterdir()) == []

    third = WorkerPool(ctx, 1)  # the process works again: a folder of its own
    third.start()
    try:
        again = process_work_dir(ctx.settings.data_dir)
        assert again.is_dir() and again.with_name(again.name + ".lock").is_file()
    finally:
        third.stop()
    assert list(work.iterdir()) == []
