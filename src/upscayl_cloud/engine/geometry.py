"""Tiling geometry: pure arithmetic, no ncnn, no pixels.

Following Real-ESRGAN's ``tile_process``, each tile names its rectangles
explicitly rather than passing offsets around:

* ``core``: the part of the input image this tile is responsible for;
* ``source``: what is fed to the network, ``core`` grown by the overlap
  (padded networks: clamped to the image, or to the image and a mirrored
  border, see ``TileRule.mirror_edges``) or by the
  network's context and alignment (unpadded networks), mirrored where it
  leaves the image;
* ``keep``: the part of the network's output that is kept, relative to it;
* ``target``: where that part lands in the output image (``core * scale``).

Padding is cropped off, never blended: with enough overlap the kept pixels are
the ones the whole-image run would produce (the whole image mirrored by
``MIRRORED_EDGE``, for networks that mirror their edges).

Every tile of one image has the same ``source`` size: edge tiles of padded
networks take their overlap from inside the image (or its mirrored border)
instead of losing it, and tiles of unpadded networks all span the widest
aligned core. Runtimes that compile a network for one input shape (OpenVINO)
then compile once per image instead of up to nine times, and edge tiles see
more context, not less.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Pixels mirrored beyond the image's edges for the padded networks that
#: mirror them: upstream's ``prepadding``. On flat colours 8 already comes
#: within 3/255 of 32 (bench/README.md, "Image edges"), and an image one tile
#: across pays for the border on its whole width: 160 px cost 1.27x, not
#: 1.96x as with the 32 px overlap.
MIRRORED_EDGE = 10

#: Relative cost per pixel of a source this many pixels wide (1: ordinary).
WidthCost = Callable[[int], float]


class WidthTimings(Protocol):
    """How a runtime's speed per pixel depends on the source width, where it
    does (``backends.width_costs``)."""

    def relative(self, width: int) -> float:
        """The width's cost relative to its neighbours', timing it if need be."""

    def known(self, width: int) -> float:
        """The same from what is timed already, 1 for the rest."""


#: A width costing at most this much over its neighbours is taken as is.
ORDINARY_WIDTH = 1.3

#: Extra columns of context a tile may take to reach an ordinary width.
WIDTH_SLACK = 4

#: Cutting an image one tile wide in two must save at least this share:
#: two calls and their copies cost a little beyond their pixels.
SPLIT_GAIN = 0.9

#: Widths are timed only for images at least this tall (shorter ones use
#: the widths timed already: ``WidthTimings.known``). Timing a
#: width costs about what 70 rows of it do (more for one that looks slow),
#: once per width and machine; one width in five is slow, by 2.4x on
#: average, so an image saves about 0.28 of its rows' time: from 256 rows
#: on, the timing is repaid by the image itself or the next of that width.
TUNED_MIN_HEIGHT = 256


@dataclass(frozen=True)
class Rect:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def scaled(self, factor: int) -> Rect:
        return Rect(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor)


@dataclass(frozen=True)
class Tile:
    core: Rect
    source: Rect
    keep: Rect
    target: Rect


@dataclass(frozen=True)
class TileRule:
    """How one network wants its tiles (see ``networks.NetworkSpec``)."""

    scale: int
    context: int = 0
    align: int = 1
    overlap: int = 0
    #: Padded networks only: how the runtime's speed per pixel depends on the
    #: source width, where it does (OpenVINO's bf16 convolutions run about
    #: one width in five of some networks 1.5-5x slower, see
    #: ``backends.width_costs``). Slow widths are stepped around: a wider
    #: source takes a few more columns from inside the image, and an image
    #: one tile wide is cut in two where their overlap costs less.
    #: Images too short to pay for timing (``TUNED_MIN_HEIGHT``) time
    #: nothing but still step around the slow widths other images found.
    widths: WidthTimings | None = field(default=None, compare=False, repr=False)
    #: Padded networks only: feed the image's edges mirrored by
    #: ``MIRRORED_EDGE`` pixels, as upstream's preprocessing does, rather than
    #: bare to the network's zero padding (``NetworkSpec.mirror_edges``).
    mirror_edges: bool = False

    @property
    def border(self) -> int:
        """Pixels mirrored beyond each edge of the image for a padded network."""
        return min(MIRRORED_EDGE, self.overlap) if self.mirror_edges and self.context == 0 else 0

    def output_size(self, source_width: int, source_height: int) -> tuple[int, int]:
        """Size the network returns for a source of that size."""
        c = 2 * self.context
        return self.scale * (source_width - c), self.scale * (source_height - c)


def split_axis(length: int, tile: int, align: int = 1) -> list[tuple[int, int]]:
    """Cut ``[0, length)`` into near-equal spans of at most about ``tile``.

    Every boundary but the last is a multiple of ``align``. Balanced spans
    avoid a sliver of a last tile that would cost a whole network call.
    """
    if length <= 0:
        raise ValueError("length must be positive")
    tile = max(align, tile - tile % align)
    count = math.ceil(length / tile)
    cuts = [0]
    for i in range(1, count):
        cut = round(i * length / count / align) * align
        if cuts[-1] < cut < length:
            cuts.append(cut)
    cuts.append(length)
    return list(itertools.pairwise(cuts))


def plan_tiles(width: int, height: int, tile_size: int, rule: TileRule) -> list[Tile]:
    """Every tile of a ``width x height`` image, row by row."""
    rows = _axis(height, tile_size, rule)
    timings = rule.widths if rule.context == 0 else None
    cost = None
    if timings is not None:
        cost = timings.relative if height >= TUNED_MIN_HEIGHT else timings.known
    cols = _axis(width, tile_size, rule, cost)
    s = rule.scale
    tiles = []
    for (y0, y1), (sy0, sy1), ky in rows:
        for (x0, x1), (sx0, sx1), kx in cols:
            core = Rect(x0, y0, x1, y1)
            keep = Rect(kx * s, ky * s, (kx + core.width) * s, (ky + core.height) * s)
            tiles.append(Tile(core, Rect(sx0, sy0, sx1, sy1), keep, core.scaled(s)))
    return tiles


_Span = tuple[tuple[int, int], tuple[int, int], int]


def _axis(
    length: int, tile_size: int, rule: TileRule, cost: WidthCost | None = None
) -> list[_Span]:
    """One axis: each tile's core, its source, and where the core starts in
    the source. Every source on the axis has the same size."""
    cores = split_axis(length, tile_size, rule.align)
    widest = max(stop - start for start, stop in cores)
    if cost is not None:
        cores, widest = _avoid_slow_widths(length, cores, widest, rule, cost)
    spans = []
    for start, stop in cores:
        if rule.context == 0:
            border = rule.border
            size = min(length + 2 * border, widest + 2 * rule.overlap)
            source_start = min(max(-border, start - rule.overlap), length + border - size)
            spans.append(((start, stop), (source_start, source_start + size), start - source_start))
        else:
            aligned = math.ceil(widest / rule.align) * rule.align
            source = (start - rule.context, start + aligned + rule.context)
            spans.append(((start, stop), source, 0))
    return spans


def _avoid_slow_widths(
    length: int, cores: list[tuple[int, int]], widest: int, rule: TileRule, cost: WidthCost
) -> tuple[list[tuple[int, int]], int]:
    """Cores, and the width every source is given less its two overlaps, so
    that sources avoid slow widths. A wider source takes its extra columns
    from inside the image, and two tiles overlap as any tiles do, so the
    result stays what the overlap guarantees."""
    overlap = rule.overlap
    span = length + 2 * rule.border  # what a source can span: the image, mirrored borders
    need = widest + 2 * overlap
    if need < span:  # several tiles: a few more columns of context
        return cores, _cheapest_width(need, min(span, need + WIDTH_SLACK), cost) - 2 * overlap
    # Every source spans the whole axis (usually one tile across): cut it
    # in two only if that width is slow and the image wide enough for the
    # second overlap to cost less than the slowness.
    if cost(span) <= ORDINARY_WIDTH or length < 8 * max(1, overlap):
        return cores, widest
    halves = split_axis(length, math.ceil(length / 2), rule.align)
    half_need = max(stop - start for start, stop in halves) + 2 * overlap
    if half_need >= span:
        return cores, widest
    source = _cheapest_width(half_need, min(span - 1, half_need + WIDTH_SLACK), cost)
    now = len(cores) * span * cost(span)
    if len(halves) * source * cost(source) < SPLIT_GAIN * now:
        return halves, source - 2 * overlap
    return cores, widest


def _cheapest_width(low: int, high: int, cost: WidthCost) -> int:
    """The narrowest ordinary width in ``low..high``, else the cheapest one;
    widths are measured only as far as needed."""
    seen = {}
    for width in range(low, high + 1):
        seen[width] = width * cost(width)
        if seen[width] <= width * ORDINARY_WIDTH:
            return width
    return min(seen, key=seen.__getitem__)


def mirror_indices(start: int, stop: int, length: int) -> list[int]:
    """Indices ``start..stop-1`` folded into ``[0, length)`` by reflection.

    Reflection without repeating the edge pixel (like numpy's ``reflect``),
    folded as often as needed, so that even an image narrower than a
    network's context gets a well-defined border.
    """
    if length == 1:
        return [0] * (stop - start)
    period = 2 * (length - 1)
    out = []
    for i in range(start, stop):
        j = i % period
        out.append(j if j < length else period - j)
    return out
