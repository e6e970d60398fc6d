"""The compiled-network cache folder stays under its limit."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from upscayl_cloud.engine.backends.disk_cache import prune


def test_the_least_recently_used_files_go_first(tmp_path):
    for age, name in enumerate(["new", "mid", "old"]):
        path = tmp_path / f"{name}.blob"
        path.write_bytes(b"x" * 1000)
        stamp = 1_000_000 - age * 100
        os.utime(path, (stamp, stamp))
    assert prune(tmp_path, 2000) == 1000
    assert sorted(p.stem for p in tmp_path.iterdir()) == ["mid", "new"]
    assert prune(tmp_path, 2000) == 0
    (tmp_path / ".lock").write_bytes(b"")
    assert prune(tmp_path, 0) == 2000
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # a held lock is never deleted


def test_a_checksum_goes_with_its_blob(tmp_path):
    for age, name in enumerate(["new", "old"]):
        (tmp_path / f"{name}.blob").write_bytes(b"x" * 1000)
        (tmp_path / f".{name}.blob.sha256").write_text("0\n")
        stamp = 1_000_000 - age * 100
        os.utime(tmp_path / f"{name}.blob", (stamp, stamp))
    assert prune(tmp_path, 1000) == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [".new.blob.sha256", "new.blob"]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_file_that_cannot_be_deleted_is_left_and_the_next_one_goes(tmp_path):
    """An immutable file (root cannot delete it either; a blob of another
    account behaves the same): pruning failed, and with it the compilation
    it followed, although the folder is only a saving."""
    for age, name in enumerate(["new", "mid", "old"]):
        path = tmp_path / f"{name}.blob"
        path.write_bytes(b"x" * 1000)
        stamp = 1_000_000 - age * 100
        os.utime(path, (stamp, stamp))
    stuck = tmp_path / "old.blob"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode:
        pytest.skip("this filesystem or account cannot make a file immutable")
    try:
        assert prune(tmp_path, 2000) == 1000
        assert sorted(p.stem for p in tmp_path.iterdir()) == ["new", "old"]
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
