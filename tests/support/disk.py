"""A full work disk, which cannot be provoked for real here (no privileges
to mount a small file system)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from upscayl_cloud.diskspace import allocated_bytes


def disk_with_little_free(monkeypatch: pytest.MonkeyPatch, free: int = 10**6) -> None:
    """A stand-in, named so, for a full disk we cannot provoke:
    ``shutil.disk_usage`` reports the real disk's size with ``free`` bytes
    free (other work holding the rest)."""
    real_disk_usage = shutil.disk_usage

    def full_disk_usage(path: Any) -> Any:
        usage = real_disk_usage(path)
        return usage._replace(used=usage.total - free, free=free)

    monkeypatch.setattr(shutil, "disk_usage", full_disk_usage)


def small_disk(monkeypatch: pytest.MonkeyPatch, root: Path, capacity: int) -> None:
    """A stand-in, named so, for a small file system mounted at ``root`` (we
    cannot mount one): ``shutil.disk_usage`` reports ``capacity`` bytes, of
    which the files under ``root`` take what they really take on disk, so
    that removing them frees space as it would there."""
    real_disk_usage = shutil.disk_usage

    def small_disk_usage(path: Any) -> Any:
        used = allocated_bytes(root)
        return real_disk_usage(path)._replace(
            total=capacity, used=used, free=max(0, capacity - used)
        )

    monkeypatch.setattr(shutil, "disk_usage", small_disk_usage)


def fill(path: Path, size: int) -> None:
    """A file of ``size`` bytes really allocated on disk (quickly: reserved,
    not written; a sparse file would take no space)."""
    with path.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, size)
