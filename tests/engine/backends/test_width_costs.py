"""Widths timed against their neighbours: the ratio, once per width.

The timings here are given, not measured: what is tested is the arithmetic
and the caching. The real probe on OpenVINO is tested in test_openvino.py.
"""

from __future__ import annotations

import pytest

from upscayl_cloud.engine.backends.width_costs import MIN_WIDTH, NEIGHBOURS, WidthCosts


class _Timings:
    """Seconds per pixel by width, a clock that can move, and the widths timed."""

    def __init__(self, slow: dict[int, float]) -> None:
        self.slow = slow
        self.speed = 1.0
        self.timed: list[int] = []

    def __call__(self, width: int) -> float:
        self.timed.append(width)
        return self.slow.get(width, 1.0) * 2e-6 / self.speed


def test_a_width_is_compared_with_the_median_of_its_neighbours():
    timings = _Timings({395: 4.0, 397: 3.0})
    costs = WidthCosts(timings)
    assert costs.relative(395) == pytest.approx(4.0)
    assert timings.timed == list(range(395 - NEIGHBOURS, 395 + NEIGHBOURS + 1))
    # 396's and 397's neighbours include two slow widths: the lower median
    # of the four ignores them.
    assert costs.relative(396) == pytest.approx(1.0)
    assert costs.relative(397) == pytest.approx(3.0)


def test_a_width_is_timed_once_and_its_first_answer_stands():
    """The planner asks twice for one image (progress, then tiles) and must
    get one plan, even if the machine's speed moved in between."""
    timings = _Timings({400: 2.0})
    costs = WidthCosts(timings)
    first = costs.relative(400)
    timings.speed = 2.5
    timings.slow = {}
    assert costs.relative(400) == first
    assert len(timings.timed) == 2 * NEIGHBOURS + 1
    assert costs.measured == {400: first}


def test_a_uniformly_slower_machine_changes_no_ratio():
    """Neighbours are timed back to back, so contention that slows every
    width alike (seen 2x here within seconds) cancels out."""
    timings = _Timings({500: 3.0})
    timings.speed = 0.4
    assert WidthCosts(timings).relative(500) == pytest.approx(3.0)


def test_narrow_widths_are_not_timed():
    timings = _Timings({})
    assert WidthCosts(timings).relative(MIN_WIDTH) == 1.0
    assert timings.timed == []


def test_timings_kept_in_a_file_serve_the_next_process(tmp_path):
    """A restarted worker, or another sharing the cache folder, reads the
    ratios instead of timing the widths again; processes' widths merge."""
    path = tmp_path / "widths" / "net.json"
    first = WidthCosts(_Timings({395: 4.0}), path)
    assert first.relative(395) == pytest.approx(4.0)
    other = WidthCosts(_Timings({}), path)
    other.relative(600)
    timings = _Timings({})
    again = WidthCosts(timings, path)
    assert again.relative(395) == pytest.approx(4.0, abs=1e-3)
    assert again.relative(600) == pytest.approx(1.0)
    assert timings.timed == []
    assert [p.name for p in path.parent.iterdir()] == ["net.json"]  # no temporary left


def test_an_unreadable_file_is_timed_again_and_rewritten(tmp_path):
    path = tmp_path / "net.json"
    path.write_text('{"395": 4.0, "396"')  # cut short
    timings = _Timings({395: 2.0})
    costs = WidthCosts(timings, path)
    assert costs.relative(395) == pytest.approx(2.0)
    assert len(timings.timed) == 2 * NEIGHBOURS + 1
    assert WidthCosts(_Timings({}), path).measured == {395: pytest.approx(2.0, abs=1e-3)}
