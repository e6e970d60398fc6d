"""Keep a cache folder under a size limit, dropping the least recently used.

OpenVINO writes one compiled blob per network and input shape and never
deletes any; with images of many sizes the folder would grow without end.
"""

from __future__ import annotations

from pathlib import Path


def prune(folder: Path, max_bytes: int) -> int:
    """Delete the oldest files (by access, else modification time) until the
    folder holds at most ``max_bytes``; returns the bytes freed."""
    entries = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        if path.is_file():
            entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, path in sorted(entries):
        if total - freed <= max_bytes:
            break
        path.unlink(missing_ok=True)
        freed += size
    return freed
