"""The compiled-network cache folder stays under its limit."""

from __future__ import annotations

import os

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
