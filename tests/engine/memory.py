"""Anonymous memory of this process: what a runtime's pools and working
buffers hold (file-backed pages of the planes are not counted)."""

from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")


def anonymous_mib() -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no RssAnon in /proc/self/status")
