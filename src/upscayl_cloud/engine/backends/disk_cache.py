"""Keep a cache folder under a size limit, dropping the oldest files first.

OpenVINO writes one compiled blob per network and input shape and never
deletes any; with images of many sizes the folder would grow without end.
"""

from __future__ import annotations

from pathlib import Path


def prune(folder: Path, max_bytes: int) -> int:
    """Delete the oldest files until the folder holds at most ``max_bytes``;
    returns the bytes freed. Age is the later of access and modification
    time: with ``relatime`` mounts access times are coarse, so this is close
    to least recently written. A file deleted while another process reads it
    stays readable to that process (POSIX), and OpenVINO compiles again when
    a blob is missing. Dot files (locks) are never deleted."""
    entries = []
    for path in folder.iterdir():
        if path.name.startswith("."):  # lock files, not cached data
            continue
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
