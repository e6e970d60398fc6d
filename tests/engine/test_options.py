"""How many cores the engine takes: affinity, and a cgroup CPU quota.

The cgroup files are the kernel's formats written into a folder that
stands for ``/sys/fs/cgroup``.
"""

from __future__ import annotations

import os

import pytest

from upscayl_cloud.engine.options import available_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def own_cgroup(tmp_path):
    """A ``/proc/self/cgroup`` that puts this process at the root."""
    path = tmp_path / "self-cgroup"
    path.write_text("1:cpu,cpuacct:/\n0::/\n")
    return path


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("100000 100000\n", 1), ("150000 100000\n", 2), ("max 100000\n", AFFINITY)],
)
def test_a_cgroup_v2_quota_caps_the_cores(tmp_path, own_cgroup, cpu_max, cores):
    """A container limited to 2 CPUs on a 64-core node sees 64 in its
    affinity: 64 threads per worker then share 2 CPUs' time."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text(cpu_max)
    assert available_cores(root, own_cgroup) == min(AFFINITY, cores)


@pytest.mark.parametrize(("quota", "cores"), [("50000", 1), ("250000", 3), ("-1", AFFINITY)])
def test_a_cgroup_v1_quota_caps_the_cores(tmp_path, own_cgroup, quota, cores):
    cpu = tmp_path / "cgroup" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(tmp_path / "cgroup", own_cgroup) == min(AFFINITY, cores)


def test_a_quota_on_the_process_own_cgroup_counts(tmp_path):
    """A systemd unit's ``CPUQuota=`` sits in the unit's folder, below the
    root, which has no quota."""
    root = tmp_path / "cgroup"
    unit = root / "system.slice" / "upscayl-worker.service"
    unit.mkdir(parents=True)
    (unit / "cpu.max").write_text("100000 100000\n")
    (root / "system.slice" / "cpu.max").write_text("max 100000\n")
    own = tmp_path / "self-cgroup"
    own.write_text("0::/system.slice/upscayl-worker.service\n")
    assert available_cores(root, own) == 1


def test_without_a_quota_affinity_decides(tmp_path, own_cgroup):
    assert available_cores(tmp_path / "missing", own_cgroup) == AFFINITY
    assert available_cores(tmp_path / "missing", tmp_path / "no-proc") == AFFINITY
