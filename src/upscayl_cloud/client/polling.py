"""How often to ask for a task's status.

``get-task-status`` is rate limited (100 per hour per key by default), so a
tight poll loop would lock a long batch out of its own status. Polls start
quick (small images finish in a second) and slow down geometrically to a cap;
a 429 on a poll is simply waited out, since re-polling is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PollSchedule:
    """Delays between polls: ``initial``, then times ``factor`` up to ``maximum`` seconds."""

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)


def percent(data: Mapping[str, Any]) -> float:
    """The task's ``progress`` (a string in the spec) as a number, 0 when unknown."""
    try:
        return float(str(data.get("progress") or 0))
    except ValueError:
        return 0.0
