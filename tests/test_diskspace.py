"""Telling a full disk from other failures, and the work space files hold."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from support.disk import disk_with_little_free
from upscayl_cloud.diskspace import WorkDiskFullError, WorkSpace, out_of_space, work_space_needed


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


def test_files_in_progress_keep_the_space_they_will_still_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker threads of one process: the second file starts only if the
    free space covers what the first will still write, not just its own."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    estimate = 100 * 10**6
    disk_with_little_free(monkeypatch, free=work_space_needed(estimate) + 10**6)
    space = WorkSpace()
    with space.hold(first, estimate, 2):
        with pytest.raises(WorkDiskFullError) as caught, space.hold(second, estimate, 2):
            pass
        assert out_of_space(caught.value)
        # What the first has written is on the disk already (the stand-in's
        # free space stays as it was): only the rest is still owed.
        (first / "plane").write_bytes(b"\0" * (work_space_needed(estimate) - 2 * 10**6))
        with space.hold(second, 10**6, 2):
            pass
    with space.hold(second, estimate, 2):  # the first is done
        pass
