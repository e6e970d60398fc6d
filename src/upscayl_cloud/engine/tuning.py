"""Time a network's input widths before its first image (``models tune``).

The tile planner times a width the first time an image at least
``TUNED_MIN_HEIGHT`` rows tall needs it, which costs that image 0.1-0.3 s,
and images shorter than that time nothing: they step around only the slow
widths that taller images found before them. Timing every width a tile
source can have, once per machine, ahead of the service's first task,
takes both costs away: from then on every image, short ones included, is
planned around every slow width, and no task pays for a probe. The
timings go to the same file the workers read (``width_costs``), keyed by
the CPU, runtime version, precision, threads and streams, so the tuning
must run with the workers' settings, on their machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.backends.width_costs import MIN_WIDTH, NEIGHBOURS
from upscayl_cloud.engine.geometry import ORDINARY_WIDTH, WIDTH_SLACK

#: Called after each width with the width and its ratio to its neighbours.
OnWidth = Callable[[int, float], None]


@dataclass(frozen=True)
class Tuned:
    """What tuning one network found."""

    widths: range
    slow: dict[int, float]
    seconds: float


def tunable_widths(network: Network, tile_size: int) -> range:
    """Every source width the planner can ask about at this tile size: from
    the narrowest it times up to a full tile's core with its two overlaps
    and the extra columns a tile may take to reach an ordinary width."""
    spec = network.spec
    widest = tile_size - tile_size % spec.align + 2 * spec.tile_pad + WIDTH_SLACK
    return range(MIN_WIDTH + NEIGHBOURS, widest + 1)


def tune(network: Network, widths: range, on_width: OnWidth | None = None) -> Tuned | None:
    """Time each of ``widths`` not timed yet (an interrupted run resumes
    where it stopped); None where the network's runtime runs every width at
    one speed."""
    timings = network.width_timings
    if timings is None:
        return None
    start = time.perf_counter()
    slow = {}
    for width in widths:
        ratio = timings.relative(width)
        if ratio > ORDINARY_WIDTH:
            slow[width] = ratio
        if on_width is not None:
            on_width(width, ratio)
    return Tuned(widths, slow, time.perf_counter() - start)
