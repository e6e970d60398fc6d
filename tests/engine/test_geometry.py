"""Tiling geometry, checked without ncnn."""

import itertools

import numpy as np
import pytest

from upscayl_cloud.engine.geometry import TileRule, mirror_indices, plan_tiles, split_axis


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
    [TileRule(4, overlap=10), TileRule(2, overlap=0), TileRule(2, context=18, align=4)],
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


@pytest.mark.parametrize(
    "rule", [TileRule(4, overlap=10), TileRule(2, context=18, align=4), TileRule(2, context=7)]
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


@pytest.mark.parametrize("width", [395, 257, 449, 128, 129, 1001, 4099])
def test_even_width_tiles_cover_the_image_with_even_sources(width):
    """OpenVINO's slow odd widths: every source is even, one more column
    taken from inside the image, or an odd image cut in two tiles."""
    rule = TileRule(4, overlap=16, even_width=True)
    tiles = plan_tiles(width, 120, 512, rule)
    sources = {(t.source.width, t.source.height) for t in tiles}
    assert len(sources) == 1 and all(w % 2 == 0 for w, _ in sources)
    seen = np.zeros(width, dtype=int)
    for tile in tiles:
        s, c = tile.source, tile.core
        assert 0 <= s.x0 <= c.x0 and c.x1 <= s.x1 <= width
        assert s.x0 <= max(0, c.x0 - 16) and s.x1 >= min(width, c.x1 + 16)
        seen[c.x0 : c.x1] += 1
    assert (seen == 1).all()


def test_even_width_leaves_small_or_even_images_alone():
    rule = TileRule(4, overlap=16, even_width=True)
    assert [t.source.width for t in plan_tiles(127, 50, 512, rule)] == [127]  # split too costly
    assert [t.source.width for t in plan_tiles(396, 50, 512, rule)] == [396]
    assert [t.source.width for t in plan_tiles(395, 50, 512, TileRule(4, overlap=16))] == [395]
