"""Which files a run takes: ``client.files.collect`` on real folders."""

from __future__ import annotations

from pathlib import Path

from tests.client.helpers import write_image
from upscayl_cloud.client.files import EarlierResult, Skipped, Source, collect


def test_a_folder_upscaled_in_place_skips_its_earlier_results(tmp_path: Path) -> None:
    """Results (and their thumbnails, and `` (n)`` twins) are not inputs again,
    unless named one by one."""
    write_image(tmp_path / "a.jpg", 8, 8)
    results = [
        "a_upscayl_2x_quick-clear-4x.png",
        "a_upscayl_2x_quick-clear-4x (2).PNG",
        "a_upscayl_4x_upscayl-standard-4x.jpg",
        "a_upscayl_2x_quick-clear-4x_thumb.webp",
    ]
    for name in results:
        write_image(tmp_path / name, 8, 8)
    write_image(tmp_path / "holiday_upscayl.png", 8, 8)  # not Upscayl's pattern

    found = collect([tmp_path])
    taken = sorted(i.path.name for i in found if isinstance(i, Source))
    skipped = {i.path.name: type(i) for i in found if isinstance(i, Skipped)}
    assert taken == ["a.jpg", "holiday_upscayl.png"]
    assert skipped == dict.fromkeys(results, EarlierResult)

    named = collect([tmp_path / results[0]])
    assert [type(i) for i in named] == [Source]
