"""Give freed heap memory back to the operating system (glibc only).

OpenVINO's dynamic-shape compilations allocate working buffers of a new
size for every input size; once handed back they go to glibc's heap, which
keeps most of them: a worker's anonymous memory grew from 150 to 630 MiB
over ten image sizes of one network, although nothing was held. Asking
glibc to trim its heap after a release keeps it at 100-160 MiB
(tests/engine/backends/test_openvino.py). Elsewhere (musl, macOS) this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        log.debug("no malloc_trim in %s: freed memory stays with the allocator", name)
        return None


def return_freed_memory() -> None:
    """Release the heap's free pages; cheap when there are few."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
