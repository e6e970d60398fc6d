"""Tiling geometry: pure arithmetic, no ncnn, no pixels.

Following Real-ESRGAN's ``tile_process``, each tile names its rectangles
explicitly rather than passing offsets around:

* ``core``: the part of the input image this tile is responsible for;
* ``source``: what is fed to the network, ``core`` grown by the overlap
  (padded networks, clamped to the image) or by the network's context and
  alignment (unpadded networks, mirrored where it leaves the image);
* ``keep``: the part of the network's output that is kept, relative to it;
* ``target``: where that part lands in the output image (``core * scale``).

Padding is cropped off, never blended: with enough overlap the kept pixels are
the ones the whole-image run would produce.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


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
    tiles = []
    for y0, y1 in split_axis(height, tile_size, rule.align):
        for x0, x1 in split_axis(width, tile_size, rule.align):
            tiles.append(_tile(Rect(x0, y0, x1, y1), width, height, rule))
    return tiles


def _tile(core: Rect, width: int, height: int, rule: TileRule) -> Tile:
    s = rule.scale
    if rule.context == 0:
        o = rule.overlap
        source = Rect(
            max(0, core.x0 - o),
            max(0, core.y0 - o),
            min(width, core.x1 + o),
            min(height, core.y1 + o),
        )
        keep = Rect(
            (core.x0 - source.x0) * s,
            (core.y0 - source.y0) * s,
            (core.x1 - source.x0) * s,
            (core.y1 - source.y0) * s,
        )
    else:
        c, a = rule.context, rule.align
        aligned_w = math.ceil(core.width / a) * a
        aligned_h = math.ceil(core.height / a) * a
        source = Rect(core.x0 - c, core.y0 - c, core.x0 + aligned_w + c, core.y0 + aligned_h + c)
        keep = Rect(0, 0, core.width * s, core.height * s)
    return Tile(core=core, source=source, keep=keep, target=core.scaled(s))


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
