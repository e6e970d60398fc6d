"""Which files a run takes: ``client.files.collect`` on real folders."""

from __future__ import annotations

import os
from pathlib import Path

from tests.client.helpers import write_image
from upscayl_cloud.client.files import Duplicate, EarlierResult, Skipped, Source, collect


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
    # Named beside its folder, in either order: taken, not also skipped.
    for order in ([tmp_path, tmp_path / results[0]], [tmp_path / results[0], tmp_path]):
        both = collect(order)
        assert sorted(i.path.name for i in both if isinstance(i, Skipped)) == sorted(results[1:])


def test_what_is_no_regular_file_is_skipped_not_opened(tmp_path: Path) -> None:
    """Opening a named pipe waits for a writer: the run hung."""
    os.mkfifo(tmp_path / "pipe.png")
    write_image(tmp_path / "a.png", 8, 8)
    found = collect([tmp_path])
    assert [(type(i), i.path.name) for i in found] == [(Source, "a.png"), (Skipped, "pipe.png")]
    assert "not a regular file" in found[1].reason


def test_links_to_files_already_taken_are_reported_not_dropped(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 8, 8)
    write_image(tmp_path / "real" / "b.png", 8, 8)
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "sub").symlink_to(tmp_path / "real", target_is_directory=True)

    found = collect([tmp_path], recursive=True)
    taken = sorted(str(i.path.relative_to(tmp_path)) for i in found if isinstance(i, Source))
    twins = {str(i.path.relative_to(tmp_path)): i.reason for i in found if isinstance(i, Duplicate)}
    assert taken == ["a.png", "real/b.png"]
    skipped = {str(i.path.relative_to(tmp_path)): i.reason for i in found if type(i) is Skipped}
    assert twins == {"link.png": f"the same file as {tmp_path / 'a.png'} (a link)"}
    assert skipped == {"sub": "a link to a folder, not followed (name it to include its files)"}
    named = collect([tmp_path / "sub"])  # named, a linked folder is taken
    assert [i.path.name for i in named if isinstance(i, Source)] == ["b.png"]
    assert [type(i) for i in collect([tmp_path / "a.png", tmp_path / "a.png"])] == [Source]


def test_one_folder_spelt_two_ways_is_taken_once_without_a_word(tmp_path: Path) -> None:
    """``pics`` and ``pics/../pics`` are one folder named twice, not a link."""
    write_image(tmp_path / "pics" / "a.png", 8, 8)
    found = collect([tmp_path / "pics", tmp_path / "pics" / ".." / "pics"])
    assert [type(i) for i in found] == [Source]
