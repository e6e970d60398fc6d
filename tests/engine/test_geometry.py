"""Tiling geometry, checked without ncnn."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from upscayl_cloud.engine.geometry import (
    MIRRORED_EDGE,
    TUNED_MIN_HEIGHT,
    WIDTH_SLACK,
    Rect,
    TileRule,
    mirror_indices,
    plan_tiles,
    split_axis,
)


@pytest.mark.parametrize("length", [1, 3, 31, 255, 256, 257, 1000, 4099])
@pytest.mark.parametrize("align", [1, 2, 4])
def test_split_axis_covers_once_with_aligned_cuts(length, align):
    spans = split_axis(length, 256, align)
    assert spans[0][0] == 0
    assert spans[-1][1] == length
    for (a0, a1), (b0, b1) in itertools.pairwise(spans):
        assert a1 == b0 and a0 < a1 and b0 < b1
        assert b0 % align == 0
    assert max(b - a for a, b in spans) <= 256 + align


def test_split_axis_balances_instead_of_leaving_a_sliver():
    assert split_axis(257, 256) == [(0, 128), (128, 257)]


@pytest.mark.parametrize(
    "rule",
    [
        TileRule(4, overlap=10),
        TileRule(4, overlap=10, mirror_edges=True),
        TileRule(2, overlap=0),
        TileRule(2, context=18, align=4),
    ],
)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (5, 3), (100, 37), (300, 200)])
def test_targets_tile_the_output_exactly_once(rule, width, height):
    seen = np.zeros((height * rule.scale, width * rule.scale), dtype=int)
    for tile in plan_tiles(width, height, 48, rule):
        t = tile.target
        seen[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert (t.width, t.height) == (tile.keep.width, tile.keep.height)
        out_w, out_h = rule.output_size(tile.source.width, tile.source.height)
        assert tile.keep.x1 <= out_w and tile.keep.y1 <= out_h
    assert (seen == 1).all()


def test_padded_tiles_overlap_but_stay_inside_the_image():
    tiles = plan_tiles(100, 100, 48, TileRule(4, overlap=10))
    for tile in tiles:
        s, c = tile.source, tile.core
        assert 0 <= s.x0 <= c.x0 and c.x1 <= s.x1 <= 100
        # At least the overlap on every side that is not the image's edge.
        assert s.x0 <= max(0, c.x0 - 10) and s.x1 >= min(100, c.x1 + 10)


def test_mirrored_edges_give_every_tile_its_overlap_beyond_the_image():
    """Networks that mirror their edges see the full overlap on every side
    of every tile, the image's edges included, and never further out."""
    rule = TileRule(4, overlap=10, mirror_edges=True)
    tiles = plan_tiles(100, 100, 48, rule)
    for tile in tiles:
        s, c = tile.source, tile.core
        assert -10 <= s.x0 <= c.x0 - 10 and c.x1 + 10 <= s.x1 <= 110
        assert -10 <= s.y0 <= c.y0 - 10 and c.y1 + 10 <= s.y1 <= 110
    assert min(t.source.x0 for t in tiles) == -10 and max(t.source.x1 for t in tiles) == 110
    (single,) = plan_tiles(20, 7, 48, rule)
    assert single.source == Rect(-10, -10, 30, 17) and single.keep == Rect(40, 40, 120, 68)
    (bare,) = plan_tiles(20, 7, 48, TileRule(4, overlap=10))
    assert bare.source == Rect(0, 0, 20, 7) and bare.keep == Rect(0, 0, 80, 28)
    unpadded = TileRule(2, context=7, mirror_edges=True)  # has its own mirrored context
    assert plan_tiles(20, 7, 48, unpadded) == plan_tiles(20, 7, 48, TileRule(2, context=7))


@pytest.mark.parametrize(
    "rule",
    [
        TileRule(4, overlap=10),
        TileRule(4, overlap=10, mirror_edges=True),
        TileRule(2, context=18, align=4),
        TileRule(2, context=7),
    ],
)
@pytest.mark.parametrize(("width", "height"), [(5, 3), (101, 50), (300, 200), (97, 301)])
def test_every_tile_of_an_image_has_the_same_source_size(rule, width, height):
    """One input shape per image: runtimes that compile per shape compile once."""
    tiles = plan_tiles(width, height, 48, rule)
    assert len({(t.source.width, t.source.height) for t in tiles}) == 1


def test_unpadded_tiles_carry_context_and_alignment():
    rule = TileRule(2, context=18, align=4)
    for tile in plan_tiles(101, 50, 48, rule):
        s, c = tile.source, tile.core
        assert c.x0 % 4 == 0 and c.y0 % 4 == 0
        assert s.x0 == c.x0 - 18 and s.y0 == c.y0 - 18
        assert (s.width - 36) % 4 == 0 and (s.height - 36) % 4 == 0
        assert s.width - 36 >= c.width


def test_mirror_indices_match_numpy_reflect():
    for length in (1, 2, 5, 9):
        row = np.arange(length)
        padded = np.pad(row, (20, 23), mode="reflect") if length > 1 else np.zeros(length + 43)
        assert mirror_indices(-20, length + 23, length) == padded.tolist()


class _Widths:
    """A runtime whose speed has cliffs at some widths (as OpenVINO's bf16
    convolutions have on this machine: ``backends.width_costs``), with the
    widths the planner asked to time, and those it looked up."""

    def __init__(self, slow: set[int], factor: float = 3.0, known: frozenset = frozenset()):
        self.slow = slow
        self.factor = factor
        self.known_slow = known
        self.asked: list[int] = []
        self.looked_up: list[int] = []

    def relative(self, width: int) -> float:
        self.asked.append(width)
        return self.factor if width in self.slow else 1.0

    def known(self, width: int) -> float:
        self.looked_up.append(width)
        return self.factor if width in self.known_slow else 1.0


def _check_cover(tiles, width: int, overlap: int, border: int = 0) -> set[int]:
    """Every column is some tile's core exactly once, each source holds its
    core and the overlap around it (within the image and its mirrored
    ``border``); the source widths."""
    seen = np.zeros(width, dtype=int)
    for tile in (t for t in tiles if t.core.y0 == 0):  # one row of tiles
        s, c = tile.source, tile.core
        assert -border <= s.x0 <= c.x0 and c.x1 <= s.x1 <= width + border
        assert s.x0 <= max(-border, c.x0 - overlap)
        assert s.x1 >= min(width + border, c.x1 + overlap)
        seen[c.x0 : c.x1] += 1
    assert (seen == 1).all()
    return {t.source.width for t in tiles}


# Slow widths every few pixels, two of them side by side (as seen: 146-147).
SLOW = {w for w in range(100, 5000) if w % 7 in (2, 3) or w % 11 == 0}


@pytest.mark.parametrize("width", [395, 449, 700, 1001, 1030, 4099])
def test_several_tiles_take_more_context_to_reach_an_ordinary_width(width):
    """Tiles of an image several tiles wide step around slow source widths
    by taking a few more columns from inside the image."""
    cost = _Widths(SLOW)
    tiles = plan_tiles(width, 300, 180, TileRule(4, overlap=16, widths=cost))
    sources = _check_cover(tiles, width, 16)
    assert len(sources) == 1 and not sources & SLOW
    need = max(t.core.width for t in tiles) + 32
    assert need <= sources.pop() <= need + WIDTH_SLACK
    assert cost.asked == sorted(set(cost.asked))  # each width once, narrowest first


def test_an_image_one_slow_tile_wide_is_cut_in_two():
    cost = _Widths({395})
    tiles = plan_tiles(395, 300, 512, TileRule(4, overlap=16, widths=cost))
    assert len(tiles) == 2
    assert _check_cover(tiles, 395, 16) == {198 + 32}


def test_a_cut_must_cost_less_than_the_slowness():
    """Two tiles of 182 columns for one of 300 are 21 % more pixels, and a
    cut must save a tenth: a width 1.34x slow stays one tile, 1.4x is cut;
    an image too narrow to cut stays whole however slow."""
    for factor, sources in ((1.34, [300]), (1.4, [182, 182])):
        rule = TileRule(4, overlap=16, widths=_Widths({300}, factor))
        assert [t.source.width for t in plan_tiles(300, 300, 512, rule)] == sources
    narrow = TileRule(4, overlap=16, widths=_Widths({127}))
    assert [t.source.width for t in plan_tiles(127, 300, 512, narrow)] == [127]


def test_ordinary_widths_and_short_images_are_left_alone():
    cost = _Widths({395})
    rule = TileRule(4, overlap=16, widths=cost)
    assert [t.source.width for t in plan_tiles(396, 300, 512, rule)] == [396]
    assert cost.asked == [396]
    cost.asked.clear()
    short = plan_tiles(395, TUNED_MIN_HEIGHT - 1, 512, rule)  # timing would cost more
    assert [t.source.width for t in short] == [395] and cost.asked == []
    assert cost.looked_up == [395]  # not timed by any image yet: ordinary
    cost.looked_up.clear()
    unpadded = TileRule(2, context=18, align=4, widths=cost)
    assert len(plan_tiles(395, 300, 512, unpadded)) == 1 and cost.asked == []
    assert cost.looked_up == []


def test_short_images_use_only_the_widths_timed_already():
    """Timing would cost a short image more than it saves, but a width
    other images found slow costs nothing to avoid."""
    widths = _Widths(set(), known=frozenset({395}))
    rule = TileRule(4, overlap=16, widths=widths)
    short = plan_tiles(395, TUNED_MIN_HEIGHT - 1, 512, rule)
    assert len({t.core.x0 for t in short}) == 2 and widths.asked == []
    assert widths.looked_up[0] == 395
    tall = plan_tiles(395, TUNED_MIN_HEIGHT, 512, rule)  # times, finds it ordinary
    assert [t.source.width for t in tall] == [395] and widths.asked == [395]


@pytest.mark.parametrize("mirror_edges", [False, True])
def test_any_width_costs_keep_every_plan_exact(mirror_edges):
    """Whatever the timings say (slow, ordinary, meaningless), every column
    is one tile's core exactly once, every source lies in the image with its
    overlap, and all sources of an image have one size: random costs over
    many lengths, tile sizes, overlaps and alignments."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        length = int(rng.integers(1, 700))
        overlap = int(rng.choice([0, 1, 3, 16, 32]))
        align = int(rng.choice([1, 2, 4]))
        tile = int(rng.choice([8, 31, 64, 128, 255, 512]))
        border = min(MIRRORED_EDGE, overlap) if mirror_edges else 0
        costs = rng.choice([1.0, 1.31, 2.5, 5.0, 0.0], size=length + 2 * border + WIDTH_SLACK + 2)
        table = SimpleNamespace(relative=costs.__getitem__, known=costs.__getitem__)
        rule = TileRule(2, align=align, overlap=overlap, widths=table, mirror_edges=mirror_edges)
        tiles = plan_tiles(length, TUNED_MIN_HEIGHT, tile, rule)
        sources = _check_cover(tiles, length, overlap, border)
        assert len(sources) == 1
        for t in tiles:
            assert t.keep.x0 == (t.core.x0 - t.source.x0) * 2
            assert t.keep.width == t.core.width * 2
