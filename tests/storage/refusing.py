"""A folder whose entries the system really refuses to rename or remove.

No stand-in: as root, permissions refuse nothing, but the immutable flag
(``chattr +i``) refuses root too (EPERM); as another user, a folder without
write permission refuses them (EACCES). Skipped where neither can be set
(a file system without the flag, or a container without
CAP_LINUX_IMMUTABLE), rather than faked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def entries_fixed(folder: Path) -> Iterator[None]:
    """While inside, no entry of ``folder`` can be renamed, added or removed
    (its subfolders' own entries still can)."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("no chattr to make a folder immutable (e2fsprogs)")
    made = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
