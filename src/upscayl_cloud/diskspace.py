"""A full disk, told apart from every other failure, for the API and the
workers alike (neither imports the other: this module imports nothing of
the project, and loads no image library).

A full disk (or quota) is no bug of ours nor the client's, and it passes:
the API answers 503 (``api.errors``), a worker hands its task back to the
queue with a backoff (``worker``).
"""

from __future__ import annotations

import errno
import os

#: ``ENOSPC`` (no space left on the device) and ``EDQUOT`` (quota exceeded).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How libvips reports them: its errors carry the system's words, not the
#: number ("system error: No space left on device").
_NO_SPACE_WORDS = tuple(os.strerror(code).lower() for code in sorted(NO_SPACE_ERRNOS))


def _from_libvips(error: BaseException) -> bool:
    """A ``pyvips.Error``, told by its module so that pyvips is not imported."""
    return type(error).__module__.split(".")[0] == "pyvips"


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a full disk: an
    ``OSError`` with ``ENOSPC``/``EDQUOT``, or a libvips error whose text
    says so (a failed plane or file write)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        if _from_libvips(current) and any(w in str(current).lower() for w in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False
