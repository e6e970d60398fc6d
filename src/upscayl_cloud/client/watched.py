"""A started task of an ``upscale()`` run, as polling and the history sweep
see it: which local files it holds, and what the server last said of it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from upscayl_cloud.client.files import Source


@dataclass
class Watched:
    """A started task of the run and what its last poll said."""

    task_id: str
    sources: dict[str, Source]  # upload fileName -> source
    status: Mapping[str, Any] = field(default_factory=dict)
    #: When polls of it began to fail for want of a server, or to be refused
    #: with short Retry-Afters (None: the last one worked).
    unreachable_since: float | None = None
    #: The task's ``createdAt`` (Unix ms), once a status has told it.
    created_at: int | None = None
    #: When its status or percentage last changed (at first: when it was
    #: started), on the monotonic clock: how long it has shown no progress.
    progressed_at: float = field(default_factory=time.monotonic)
    #: Whether the run has said that it shows no progress.
    stall_told: bool = False

    def seen(self, status: Mapping[str, Any]) -> None:
        """Take a status the server answered for this task."""
        # A first status still pending is no change: the task has waited
        # since it was started, not since it was first polled (polls begin
        # once every upload of the run is done).
        if self.status:
            changed = _state(status) != _state(self.status)
        else:
            changed = status.get("status") != "pending"
        if changed:
            self.progressed_at = time.monotonic()
        self.status, self.unreachable_since = status, None
        created = status.get("createdAt")
        if isinstance(created, int) and not isinstance(created, bool):
            self.created_at = created


def _state(status: Mapping[str, Any]) -> tuple[object, object]:
    return status.get("status"), status.get("progress")
