"""A full work disk, which cannot be provoked for real here (no privileges
to mount a small file system)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest


def disk_with_little_free(monkeypatch: pytest.MonkeyPatch, free: int = 10**6) -> None:
    """A stand-in, named so, for a full disk we cannot provoke:
    ``shutil.disk_usage`` reports the real disk's size with ``free`` bytes
    free (other work holding the rest)."""
    real_disk_usage = shutil.disk_usage

    def full_disk_usage(path: Any) -> Any:
        usage = real_disk_usage(path)
        return usage._replace(used=usage.total - free, free=free)

    monkeypatch.setattr(shutil, "disk_usage", full_disk_usage)
