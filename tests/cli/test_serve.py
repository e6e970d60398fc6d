"""``serve``'s process setup."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

_CHILD = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
from upscayl_cloud.cli.serve import raise_descriptor_limit
print(raise_descriptor_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_serve_lifts_the_open_file_limit_to_the_hard_limit() -> None:
    """A soft limit of 64 would refuse the 60th client; serve takes all it may."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit here to lift the soft one to")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    returned, now, granted = (int(v) for v in out)
    assert granted == hard
    assert returned == now == hard
