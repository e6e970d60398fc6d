"""Widths timed against their neighbours: the ratio, once per width.

The timings here are given, not measured: what is tested is the arithmetic
and the caching. The real probe on OpenVINO is tested in test_openvino.py.
"""

from __future__ import annotations

import os

import pytest

from upscayl_cloud.engine.backends import width_costs
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
    # Its two nearest, then (it looks slow) again with two more each side.
    assert timings.timed == [394, 395, 396, 393, 394, 395, 396, 397]
    # 397's four neighbours include slow 395: the lower median ignores it.
    assert costs.relative(397) == pytest.approx(3.0)
    # 396 sits between two slow widths: faster than both, so ordinary.
    assert costs.relative(396) <= 1.0


def test_an_ordinary_width_costs_three_calls():
    timings = _Timings({397: 3.0})
    assert WidthCosts(timings).relative(398) == pytest.approx(1.0)
    assert timings.timed == [397, 398, 399]


def test_a_width_is_timed_once_and_its_first_answer_stands():
    """The planner asks twice for one image (progress, then tiles) and must
    get one plan, even if the machine's speed moved in between."""
    timings = _Timings({400: 2.0})
    costs = WidthCosts(timings)
    first = costs.relative(400)
    timings.speed = 2.5
    timings.slow = {}
    assert costs.relative(400) == first
    assert len(timings.timed) == 3 + 2 * NEIGHBOURS + 1
    assert costs.measured == {400: first}


def test_a_uniformly_slower_machine_changes_no_ratio():
    """Neighbours are timed back to back, so contention that slows every
    width alike (seen 2x here within seconds) cancels out."""
    timings = _Timings({500: 3.0})
    timings.speed = 0.4
    assert WidthCosts(timings).relative(500) == pytest.approx(3.0)


def test_a_burst_of_other_work_does_not_mark_a_width_slow():
    """A width that looks slow is timed again with its neighbours, and the
    faster timing of each counts: a burst only ever slows a call."""
    timings = _Timings({})
    burst = iter([5.0])

    def once_slow(width: int) -> float:
        seconds = timings(width)
        return seconds * next(burst, 1.0) if width == 300 else seconds

    assert WidthCosts(once_slow).relative(300) == pytest.approx(1.0)


def test_consecutive_widths_share_their_recent_timings():
    """The planner asks about consecutive widths; they share timings,
    reused while recent."""
    timings = _Timings({})
    costs = WidthCosts(timings)
    costs.relative(400)
    costs.relative(401)
    assert timings.timed == [399, 400, 401, 402]


@pytest.mark.parametrize("broken", [float("nan"), 0.0, float("inf")])
def test_a_timing_that_means_nothing_counts_as_ordinary(broken):
    timings = _Timings({})
    assert WidthCosts(lambda w: broken if w == 300 else timings(w)).relative(300) == 1.0
    assert WidthCosts(lambda w: broken).relative(300) == 1.0


def test_a_probe_that_fails_leaves_the_width_ordinary_and_untold():
    """Timing is an optimisation: a failed probe must not fail the image,
    and the width is timed again next time instead of kept as ordinary."""
    calls = []

    def failing(width: int) -> float:
        calls.append(width)
        raise RuntimeError("stand-in: the probe failed")

    costs = WidthCosts(failing)
    assert costs.relative(300) == 1.0 and costs.measured == {}
    costs.relative(300)
    assert len(calls) == 2


def test_known_answers_only_what_was_timed_and_times_nothing():
    timings = _Timings({395: 4.0})
    costs = WidthCosts(timings)
    assert costs.known(395) == 1.0 and timings.timed == []
    costs.relative(395)
    assert costs.known(395) == pytest.approx(4.0)


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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_the_file_is_readable_as_the_umask_allows(tmp_path, umask, mode):
    """``models tune`` run by another account than the workers': a file
    written 0600 (a temporary file's mode) made them time widths during
    tasks; it gets the mode any other file would."""
    path = tmp_path / "widths" / "net.json"
    before = os.umask(umask)
    try:
        WidthCosts(_Timings({}), path).relative(600)
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode


def test_an_unreadable_file_is_timed_again_and_rewritten(tmp_path):
    path = tmp_path / "net.json"
    path.write_text('{"395": 4.0, "396"')  # cut short
    timings = _Timings({395: 2.0})
    costs = WidthCosts(timings, path)
    assert costs.relative(395) == pytest.approx(2.0)
    assert len(timings.timed) == 3 + 2 * NEIGHBOURS + 1
    assert WidthCosts(_Timings({}), path).measured == {395: pytest.approx(2.0, abs=1e-3)}


def test_a_running_process_takes_in_widths_timed_elsewhere(tmp_path, monkeypatch):
    """A worker that loaded its timings before ``models tune`` (or another
    worker) timed more widths picks them up from the file without a
    restart, once the reload interval has passed; its own stay."""
    path = tmp_path / "net.json"
    running = WidthCosts(_Timings({}), path)
    assert running.relative(500) == pytest.approx(1.0)
    tuner = WidthCosts(_Timings({395: 4.0}), path)
    tuner.relative(395)
    assert running.known(395) == 1.0  # within the interval: no look at the file
    path.write_text(path.read_text().replace('"500": 1.0', '"500": 3.0'))  # timed elsewhere
    assert '"500": 3.0' in path.read_text()
    monkeypatch.setattr(width_costs, "RELOAD_S", 0.0)
    assert running.known(395) == pytest.approx(4.0, abs=1e-3)
    assert running.known(500) == pytest.approx(1.0)  # its own first answer stands
