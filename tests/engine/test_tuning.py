"""Tuning a network's widths ahead of its first image (``engine.tuning``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork
from upscayl_cloud.engine.geometry import ORDINARY_WIDTH, TUNED_MIN_HEIGHT, plan_tiles
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.tiling import tile_rule
from upscayl_cloud.engine.tuning import tunable_widths, tune

CLIFFS = [key for key, spec in NETWORKS.items() if spec.openvino_width_cliffs]


class _Asked:
    """Stand-in timings that record every width asked about."""

    def __init__(self, slow: Callable[[int], bool]) -> None:
        self.slow = slow
        self.asked: set[int] = set()

    def relative(self, width: int) -> float:
        self.asked.add(width)
        return 3.0 if self.slow(width) else 1.0

    def known(self, width: int) -> float:
        return self.relative(width)


class _Recording(OpenVinoNetwork):
    asked: _Asked

    @property
    def width_timings(self) -> _Asked:
        return self.asked


@pytest.mark.parametrize("key", CLIFFS)
@pytest.mark.parametrize("tile_size", [40, 97, 256])
def test_every_width_the_planner_can_ask_about_is_tuned(key: str, tile_size: int) -> None:
    """Tuning covers every source width a plan at that tile size can time,
    slack and cuts in two included, and no wider one: with one width in five
    slow, and with every width wider than a tile's core slow (a full tile
    then takes all its slack)."""
    network = _Recording(NETWORKS[key], threads=1)
    timed: set[int] = set()
    for slow in (lambda width: width % 5 == 0, lambda width: width > tile_size):
        network.asked = _Asked(slow)
        rule = tile_rule(network)
        for width in range(1, 3 * tile_size + 70):
            plan_tiles(width, TUNED_MIN_HEIGHT, tile_size, rule)
        timed |= network.asked.asked
    widths = tunable_widths(network, tile_size)
    timed = {width for width in timed if width >= widths.start}
    assert timed <= set(widths)
    assert max(timed) == widths.stop - 1


def test_tuned_widths_are_known_to_a_restarted_worker_without_probing(tmp_path) -> None:
    spec = NETWORKS["span-x2-ch48"]
    seen: list[tuple[int, float]] = []
    first = tune(
        OpenVinoNetwork(spec, threads=2, cache_dir=tmp_path),
        range(40, 56),
        lambda *args: seen.append(args),
    )
    seen_widths = [width for width, _ in seen]
    assert seen_widths == list(range(40, 56))
    assert first is not None
    assert first.slow == {width: ratio for width, ratio in seen if ratio > ORDINARY_WIDTH}

    class _NoProbe(OpenVinoNetwork):
        def _time_per_pixel(self, width: int) -> float:
            raise AssertionError(f"width {width} timed again")

    restarted = _NoProbe(spec, threads=2, cache_dir=tmp_path)
    again: list[tuple[int, float]] = []
    second = tune(restarted, range(40, 56), lambda width, ratio: again.append((width, ratio)))
    assert second is not None and second.slow == pytest.approx(first.slow, abs=1e-3)
    assert dict(again) == pytest.approx(dict(seen), abs=1e-3)
    assert restarted.compiled_count == 0


def test_a_runtime_without_slow_widths_has_nothing_to_tune() -> None:
    network = OpenVinoNetwork(NETWORKS["realesrgan-x4plus"], threads=1)
    assert tune(network, range(18, 30)) is None
