"""Which files a run takes: ``client.files.collect`` on real folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

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


def test_a_folder_that_cannot_be_listed_is_reported_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Path.glob`` passed over a subfolder without read permission, and its
    images vanished from the run without a word. The folders' modes are
    real; root (these tests run as root in containers) lists any folder
    whatever its mode, so there ``os.scandir`` is made to refuse a folder
    whose mode grants no reading, as the kernel does for a user: a stand-in
    for the check that root is spared."""
    write_image(tmp_path / "photos" / "a.png", 16, 16)
    write_image(tmp_path / "photos" / "locked" / "b.png", 16, 16, seed=1)
    write_image(tmp_path / "alone" / "c.png", 16, 16, seed=2)
    locked = [tmp_path / "photos" / "locked", tmp_path / "alone"]
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def as_a_user(path: Any) -> Any:
            if not os.stat(path).st_mode & 0o444:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", as_a_user)
    for folder in locked:
        folder.chmod(0)
    try:
        found = collect([tmp_path / "photos", tmp_path / "alone"], recursive=True)
    finally:
        for folder in locked:
            folder.chmod(0o755)
    denied = "a folder that cannot be listed: Permission denied"
    assert [(item.path, getattr(item, "reason", None)) for item in found] == [
        (tmp_path / "photos" / "a.png", None),
        (tmp_path / "photos" / "locked", denied),
        (tmp_path / "alone", denied),
    ]
    # Skipped: upscale() reports the subfolder skipped, and the folder named itself failed.
    assert [item for item in found if isinstance(item, Skipped)] == [
        Skipped(locked[0], denied),
        Skipped(locked[1], denied),
    ]


def test_link_loops_are_skipped_not_the_end_of_the_run(tmp_path: Path) -> None:
    """``Path.resolve`` raises on a link loop: one ``self -> self`` in a
    folder (or named) ended the collection, for ``upscale`` and ``client
    upscale`` alike, before any file was done."""
    write_image(tmp_path / "pics" / "a.png", 8, 8)
    (tmp_path / "pics" / "self.png").symlink_to("self.png")
    (tmp_path / "pics" / "x.png").symlink_to("y.png")
    (tmp_path / "pics" / "y.png").symlink_to("x.png")
    # An earlier result's name on a loop is looked up too (named beside it or not).
    (tmp_path / "pics" / "b_upscayl_2x_quick-clear-4x.png").symlink_to(
        "b_upscayl_2x_quick-clear-4x.png"
    )
    found = collect([tmp_path / "pics"], recursive=True)
    assert [(type(i), i.path.name, getattr(i, "reason", None)) for i in found] == [
        (Source, "a.png", None),
        (EarlierResult, "b_upscayl_2x_quick-clear-4x.png", EarlierResult.reason),
        (Skipped, "self.png", "a link loop"),
        (Skipped, "x.png", "a link loop"),
        (Skipped, "y.png", "a link loop"),
    ]
    named = collect([tmp_path / "pics" / "self.png", tmp_path / "pics" / "a.png"])
    assert named == [
        Skipped(tmp_path / "pics" / "self.png", "a link loop"),
        Source(tmp_path / "pics" / "a.png", Path("a.png"), "image/png", named[1].size),
    ]
