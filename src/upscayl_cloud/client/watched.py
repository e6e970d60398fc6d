"""A started task of an ``upscale()`` run, as polling and the history sweep
see it: which local files it holds, and what the server last said of it."""

from __future__ import annotations

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

    def seen(self, status: Mapping[str, Any]) -> None:
        """Take a status the server answered for this task."""
        self.status, self.unreachable_since = status, None
        created = status.get("createdAt")
        if isinstance(created, int) and not isinstance(created, bool):
            self.created_at = created
